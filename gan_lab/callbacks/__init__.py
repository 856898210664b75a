"""Callbacks: sample grids, training curves, learning rates (rank zero writes files), exact resume
and interruption, divergence guard."""
from gan_lab.callbacks.curves import TrainingCurves
from gan_lab.callbacks.divergence import DivergenceGuard
from gan_lab.callbacks.lr import LearningRateLogger
from gan_lab.callbacks.resume import ExactResume
from gan_lab.callbacks.samples import SampleGrid, save_grid

__all__ = ["SampleGrid", "save_grid", "TrainingCurves", "LearningRateLogger", "ExactResume", "DivergenceGuard"]
