"""Callbacks: sample grids, training curves, learning rates, metrics (rank zero writes files), exact
resume and interruption, divergence guard, fast path."""
from gan_lab.callbacks.checkpoint import Checkpoint
from gan_lab.callbacks.curves import TrainingCurves
from gan_lab.callbacks.divergence import DivergenceGuard
from gan_lab.callbacks.fast_path import FastPath
from gan_lab.callbacks.lr import LearningRateLogger
from gan_lab.callbacks.metrics import MetricsCallback
from gan_lab.callbacks.resume import ExactResume
from gan_lab.callbacks.samples import SampleGrid

__all__ = ["Checkpoint", "SampleGrid", "TrainingCurves", "LearningRateLogger", "MetricsCallback", "FastPath",
           "ExactResume", "DivergenceGuard"]
