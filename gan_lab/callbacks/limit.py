"""Limits that end a run inside an epoch: ``trainer.max_batches``, and the checkpoint of any such limit."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Checkpoint

from gan_lab.callbacks.clock import time_limit, trainer_max_time
from gan_lab.callbacks.divergence import divergence_guard
from gan_lab.callbacks.resume import ends_epoch
from gan_lab.callbacks.cadence import batches_seen
from gan_lab.errors import UserError

log = logging.getLogger(__name__)


class BatchLimit(L.Callback):
    """Stops training once ``pl_module.batches_seen`` (over every part of a run) reaches ``max_batches`` (a resume
    that already reached it is refused before training, by ``gan_lab.run``)."""

    def __init__(self, max_batches: int) -> None:
        if isinstance(max_batches, bool) or int(max_batches) != max_batches or max_batches < 1:
            raise UserError(f"trainer.max_batches={max_batches} must be an integer >= 1 (training batches), "
                            f"or null for no limit; e.g. trainer.max_batches=8000.")
        self.max_batches = int(max_batches)

    def reached(self, pl_module: L.LightningModule) -> bool:
        return getattr(pl_module, "batches_seen", 0) >= self.max_batches

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.reached(pl_module):
            trainer.should_stop = True


class LimitCheckpoint(Checkpoint):
    """Saves the batch where ``trainer.max_time`` or ``trainer.max_batches`` cut an epoch short and, once the fit
    has ended, puts it in place of ``last.ckpt``. As a Lightning ``Checkpoint`` it runs after all other callbacks.

    Args:
        dirpath: folder of ``last.ckpt`` (``<run>/checkpoints``).
        filename: name of the checkpoint it replaces.
    """

    def __init__(self, dirpath: str, filename: str = "last.ckpt") -> None:
        self.path = Path(dirpath) / filename
        self.cut_at: int | None = None  # batches into the epoch that a limit cut short
        self.cut_by: str | None = None  # the limit that did: "max_time" or "max_batches"
        self._written: Path | None = None  # the mid-epoch checkpoint, until it replaces last.ckpt

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.cut_at = self.cut_by = self._written = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if ends_epoch(trainer, batch_idx):
            return  # the epoch-end checkpoint is the resumable one
        limit = self._limit_reached(trainer, pl_module)
        if limit is None:
            return
        guard = divergence_guard(trainer)
        if guard is not None and not guard.weights_finite(pl_module):
            log.warning("trainer.%s reached with non-finite weights: no mid-epoch checkpoint written.", limit)
            return
        # this batch's state, before the epoch-end hooks step the schedulers, beside last.ckpt
        path = self.path.with_name(f".{limit}.{self.path.name}")  # as cut_checkpoint finds it
        trainer.save_checkpoint(path, weights_only=False)
        self._written, self.cut_by, self.cut_at = path, limit, batch_idx + 1

    @staticmethod
    def _limit_reached(trainer: L.Trainer, pl_module: L.LightningModule) -> str | None:
        """The limit that stops training after this batch, if any."""
        timer = time_limit(trainer)
        if trainer.should_stop and timer is not None and trainer.strategy.broadcast(timer.time_remaining() <= 0):
            return "max_time"
        limit = next((cb for cb in trainer.callbacks if isinstance(cb, BatchLimit)), None)
        return "max_batches" if limit is not None and limit.reached(pl_module) else None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        if self._written is not None:
            os.replace(self._written, self.path)  # after every epoch-end save of last.ckpt
            self._written = None
        for limit in LIMITS:  # a leftover of an earlier, killed fit: continued or stale by now
            self.path.with_name(f".{limit}.{self.path.name}").unlink(missing_ok=True)
        if stopped_by_time_limit(trainer):  # mid-epoch or at an epoch end
            print(f"gan_lab: the time limit trainer.max_time ({trainer_max_time(trainer)} of training) was "
                  f"reached after batch {batches_seen(trainer, pl_module)}, saved in "
                  f"{self.path}; continue with ckpt_path={self.path} and a larger trainer.max_time (it counts "
                  f"the time of every part of the run).", file=sys.stderr)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # a signal or failure after the limit's batch: resume from the limit's checkpoint, not from an
        # epoch-end last.ckpt written since (it would resume as if the epoch had been completed)
        if trainer.is_global_zero and self._written is not None:
            os.replace(self._written, self.path)
        self._written = None


LIMITS = ("max_time", "max_batches")


def cut_checkpoint(path: Path) -> Path:
    """The checkpoint to continue in place of ``path``: the mid-epoch one a limit left beside it at the same step
    (a kill ended the fit before it replaced ``path``), else ``path``."""
    from gan_lab.checkpoint_io import read_checkpoint

    for limit in LIMITS:
        left = path.with_name(f".{limit}.{path.name}")
        if not left.is_file() or not path.is_file():
            continue
        try:
            steps = [read_checkpoint(p, mmap=True, verify=False).get("global_step") for p in (left, path)]
        except UserError:
            continue  # a damaged leftover: the checkpoint asked for stays the one
        if steps[0] == steps[1]:
            log.warning("%s is the epoch-end save of a fit killed after trainer.%s cut that epoch short; "
                        "continuing from the limit's checkpoint %s instead.", path, limit, left)
            return left
    return path


def epoch_cut_short(trainer: L.Trainer) -> int | None:
    """The batches trained in an epoch that ``trainer.max_time`` or ``trainer.max_batches`` ended early
    (at its end); ``None`` otherwise, or when an exception interrupted the fit."""
    if trainer.interrupted:
        return None
    return next((cb.cut_at for cb in trainer.callbacks if isinstance(cb, LimitCheckpoint)), None)


def stopped_by_time_limit(trainer: L.Trainer) -> bool:
    """Whether a fit that ended normally was ended by ``trainer.max_time`` before its epochs or steps."""
    timer = time_limit(trainer)
    if timer is None or timer.time_remaining() > 0:
        return False
    if any(isinstance(cb, LimitCheckpoint) and cb.cut_by == "max_time" for cb in trainer.callbacks):
        return True  # it cut an epoch short (maybe the last one)
    epochs_left = trainer.max_epochs is None or trainer.max_epochs < 0 or trainer.current_epoch < trainer.max_epochs
    steps_left = trainer.max_steps < 0 or trainer.global_step < trainer.max_steps
    return epochs_left and steps_left
