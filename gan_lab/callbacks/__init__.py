"""Lightning callbacks: samples, curves, metrics, checkpoints, exact resume, limits, divergence, EMA, growth."""
from gan_lab.callbacks.checkpoint import Checkpoint
from gan_lab.callbacks.clock import TrainingClock
from gan_lab.callbacks.curves import TrainingCurves
from gan_lab.callbacks.divergence import DivergenceGuard
from gan_lab.callbacks.ema import EMA
from gan_lab.callbacks.fast_path import FastPath
from gan_lab.callbacks.growth import Growth
from gan_lab.callbacks.limit import LimitCheckpoint
from gan_lab.callbacks.lr import LearningRateLogger
from gan_lab.callbacks.metrics import MetricsCallback
from gan_lab.callbacks.resume import EpochPosition
from gan_lab.callbacks.rng import RngState
from gan_lab.callbacks.samples import SampleGrid
from gan_lab.callbacks.signals import GracefulStop

__all__ = ["Checkpoint", "SampleGrid", "TrainingCurves", "LearningRateLogger", "MetricsCallback", "FastPath",
           "RngState", "EpochPosition", "GracefulStop", "LimitCheckpoint", "TrainingClock", "DivergenceGuard", "EMA",
           "Growth"]
