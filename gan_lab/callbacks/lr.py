"""Logs ``lr/discriminator`` and ``lr/generator`` at every epoch start (schedulers or not)."""
from __future__ import annotations

import lightning as L

from gan_lab.callbacks.cadence import batches_seen


class LearningRateLogger(L.Callback):
    """Logs the optimisers' learning rates under gan_lab's names (not LearningRateMonitor's ``lr-Adam``)."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        values = {f"lr/{name}": opt.param_groups[0]["lr"]
                  for name, opt in zip(("discriminator", "generator"), trainer.optimizers)}
        for logger in trainer.loggers:
            logger.log_metrics(values, step=batches_seen(trainer, pl_module))
