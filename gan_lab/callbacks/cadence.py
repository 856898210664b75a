"""When callbacks act: the step they log at (training batches, not optimiser steps) and every-n-epochs cadence."""
from __future__ import annotations

import lightning as L


def batches_seen(trainer: L.Trainer, pl_module: L.LightningModule) -> int:
    """Training batches so far, as a Python int (no device read); ``trainer.global_step`` for a non-GAN module."""
    return int(getattr(pl_module, "batches_seen", trainer.global_step))


def epoch_due(trainer: L.Trainer, every_n_epochs: int) -> bool:
    """Whether an every-``every_n_epochs`` callback acts at this epoch's end: on multiples, on the last epoch of
    ``trainer.max_epochs`` (-1 or ``None``: no limit), and when training stops."""
    done = trainer.current_epoch + 1
    limit = trainer.max_epochs
    last = limit is not None and limit >= 0 and done >= limit
    return done % every_n_epochs == 0 or last or trainer.should_stop
