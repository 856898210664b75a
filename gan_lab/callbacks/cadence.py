"""The step callbacks log and decide at (the module's count of training batches, not
``trainer.global_step``, which counts optimiser steps), and when an every-n-epochs callback acts."""
from __future__ import annotations

import lightning as L


def batches_seen(trainer: L.Trainer, pl_module: L.LightningModule) -> int:
    """Training batches so far, as a Python int (no device read); ``trainer.global_step`` for a module
    that is not a :class:`~gan_lab.models.base.GAN`."""
    return int(getattr(pl_module, "batches_seen", trainer.global_step))


def epoch_due(trainer: L.Trainer, every_n_epochs: int) -> bool:
    """Whether an every-``every_n_epochs`` callback acts at the end of the current epoch: on multiples,
    on the last epoch of ``trainer.max_epochs`` (if any: -1 or ``None`` is no limit), and when training stops."""
    done = trainer.current_epoch + 1
    limit = trainer.max_epochs
    last = limit is not None and limit >= 0 and done >= limit
    return done % every_n_epochs == 0 or last or trainer.should_stop
