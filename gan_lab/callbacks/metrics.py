"""Runs an :class:`~gan_lab.metrics.Evaluator` every N epochs during training."""
from __future__ import annotations

from pathlib import Path

import lightning as L

from gan_lab.callbacks.limit import epoch_cut_short
from gan_lab.callbacks.cadence import epoch_due
from gan_lab.constraints import Count
from gan_lab.metrics.records import append_evaluation
from gan_lab.metrics.suite import Evaluator


class MetricsCallback(L.Callback):
    """Evaluates the module every N epochs, logs the values as ``val/*`` and appends them to the ``evaluations``
    of ``<run>/metrics.json``. Process 0 evaluates (fixed seed, forked RNG) and broadcasts the values.

    Args:
        run_dir: the run directory (``metrics.json`` and ``evaluation/epoch_XXXX/`` pictures).
        every_n_epochs: evaluate every N epochs (and after the last epoch).
    """

    def __init__(self, evaluator: Evaluator, run_dir: str, every_n_epochs: Count = 5) -> None:
        self.evaluator, self.run_dir, self.every_n_epochs = evaluator, Path(run_dir), int(every_n_epochs)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not epoch_due(trainer, self.every_n_epochs):
            return
        epoch = trainer.current_epoch
        record = flat = None
        if trainer.is_global_zero:  # the other DDP processes hold the same weights: they wait for its values
            out_dir = self.run_dir / "evaluation" / f"epoch_{epoch:04d}"
            record, flat = self.evaluator.evaluate(pl_module, trainer.datamodule, out_dir)
        record, flat = trainer.strategy.broadcast((record, flat), src=0)
        # completed epochs, as evaluate records them; an epoch a limit cut short is not complete
        cut = epoch_cut_short(trainer)
        done = {"epoch": epoch + 1} if cut is None else {"epoch": epoch, "batch_in_epoch": cut}
        record = {"source": "training", "checkpoint": None, **done,
                  "step": trainer.global_step, "batches_seen": getattr(pl_module, "batches_seen", None),
                  "images_seen": getattr(pl_module, "images_seen", None), **record}
        pl_module.log_dict(flat, on_step=False, on_epoch=True, sync_dist=False)
        if trainer.is_global_zero:
            append_evaluation(self.run_dir / "metrics.json", record)
