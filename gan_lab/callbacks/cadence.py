"""The step every callback logs and decides at: the module's count of training batches; and when
an every-n-epochs callback acts.

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


def epoch_due(trainer: L.Trainer, every_n_epochs: int) -> bool:
    """Whether a callback acting every ``every_n_epochs`` epochs acts at the end of the current epoch:
    on its multiples, on the last epoch of ``trainer.max_epochs`` (none when it is -1 or ``None``: no
    epoch limit, e.g. with ``trainer.max_batches`` or ``trainer.max_time``), and when training stops."""
    done = trainer.current_epoch + 1
    limit = trainer.max_epochs
    last = limit is not None and limit >= 0 and done >= limit
    return done % every_n_epochs == 0 or last or trainer.should_stop
