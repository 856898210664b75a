"""``trainer.max_batches``: stop after a number of training batches (the studies' "iterations").

Lightning's ``max_steps`` counts optimiser steps, ``n_critic + n_gen`` per batch with manual
optimisation (and fewer during ArtGAN's D-only pre-training), so a study stated in iterations
cannot be written with it. This callback reads the module's own ``batches_seen`` (saved in
checkpoints, so a resumed run counts the batches of every part) and asks the Trainer to stop after
the batch that reaches the limit; ``ExactResume`` then saves that batch's state, so a run resumed
with a larger limit continues exactly.
"""
from __future__ import annotations

import lightning as L

from gan_lab.errors import UserError


class BatchLimit(L.Callback):
    """Stops training once ``pl_module.batches_seen`` reaches ``max_batches``."""

    def __init__(self, max_batches: int) -> None:
        if isinstance(max_batches, bool) or int(max_batches) != max_batches or max_batches < 1:
            raise UserError(f"trainer.max_batches={max_batches} must be an integer >= 1 (training batches), "
                            f"or null for no limit; e.g. trainer.max_batches=8000.")
        self.max_batches = int(max_batches)

    def reached(self, pl_module: L.LightningModule) -> bool:
        return getattr(pl_module, "batches_seen", 0) >= self.max_batches

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.reached(pl_module) and trainer.ckpt_path:
            raise UserError(f"trainer.max_batches={self.max_batches} is already reached: the run of "
                            f"ckpt_path={trainer.ckpt_path} trained {pl_module.batches_seen} batches; raise "
                            f"trainer.max_batches to train further.")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.reached(pl_module):
            trainer.should_stop = True


def batch_limit(trainer: L.Trainer) -> BatchLimit | None:
    return next((cb for cb in trainer.callbacks if isinstance(cb, BatchLimit)), None)
