"""The step every callback logs and decides at: the module's count of training batches.

Lightning's ``trainer.global_step`` counts optimiser steps (``n_critic + n_gen`` per batch with
manual optimisation), so curves, sample grids and learning rates logged against it would not line
up with the module's own ``train/*`` values, which are logged per batch.
"""
from __future__ import annotations

import lightning as L


def batches_seen(trainer: L.Trainer, pl_module: L.LightningModule) -> int:
    """Training batches so far (a Python int: reading it never waits for the device); a module without
    the gan_lab counter (not a :class:`~gan_lab.models.base.GAN`) falls back to ``trainer.global_step``."""
    return int(getattr(pl_module, "batches_seen", trainer.global_step))
