"""Graceful interruption: SIGTERM, SIGUSR2 (SLURM's warning ahead of a time limit) and Ctrl-C save a
resumable checkpoint."""
from __future__ import annotations

import logging
import math
import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint

from gan_lab.callbacks.divergence import divergence_guard
from gan_lab.callbacks.resume import ends_epoch
from gan_lab.callbacks.cadence import batches_seen
from gan_lab.distributed import reduce_over_processes
from gan_lab.errors import TrainingInterrupted

log = logging.getLogger(__name__)


class GracefulStop(Checkpoint):
    """On a signal, finishes the batch, saves ``last.ckpt`` mid-epoch and stops with ``TrainingInterrupted``; DDP
    processes stop after the same batch. A signal in an epoch's last batch is served after the next batch; one that
    finds non-finite weights ends the run as diverged; a second Ctrl-C stops at once. Replaces Lightning's signal
    handlers while training; as a Lightning ``Checkpoint`` it runs after all other callbacks.

    Args:
        dirpath: folder of the interruption checkpoint (``<run>/checkpoints``).
        filename: name of the interruption checkpoint.
        signals: names of the signals that request a graceful stop.
    """

    def __init__(self, dirpath: str, filename: str = "last.ckpt",
                 signals: tuple[str, ...] | list[str] = ("SIGTERM", "SIGINT", "SIGUSR2")) -> None:
        self.path = Path(dirpath) / filename
        self.signals = [getattr(signal, name) for name in signals]
        self.requested: int | None = None  # the signal number of a pending stop request
        self._previous_handlers: dict[int, Any] = {}

    def request(self, signum: int) -> None:
        """Ask for a graceful stop after the batch in progress, as the signal ``signum`` does."""
        self.requested = signum
        log.warning("%s received: finishing the current batch, then saving %s.", signal.Signals(signum).name,
                    self.path)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.requested = None
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous_handlers[signum] = signal.signal(signum, self._handle)  # returns the previous one

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        wanted = self.requested
        if wanted is None and trainer.received_sigterm and signal.SIGTERM in self.signals:
            wanted = signal.SIGTERM  # caught by Lightning's handler before ours was installed
        if trainer.world_size > 1:  # the same request on every rank (any rank's stops them all): one all-reduce
            flag = torch.tensor([wanted or 0], device=trainer.strategy.root_device)
            wanted = int(reduce_over_processes(flag, trainer.world_size, "max").item()) or None
        if wanted is None:
            return
        self.requested = wanted  # never reset here: a signal may arrive while the ranks agree
        if ends_epoch(trainer, batch_idx):
            return  # served at the end of the next batch, after the epoch-end hooks
        name = signal.Signals(wanted).name
        guard = divergence_guard(trainer)
        if guard is not None and not guard.weights_finite(pl_module):
            # the run diverged since the guard's last check: reported as such; last.ckpt keeps the last good state
            guard.stop(trainer, pl_module, {"weights": math.nan},
                       f"is not finite ({name} received; no checkpoint was written)")
        trainer.save_checkpoint(self.path, weights_only=False)
        raise TrainingInterrupted(
            f"{name} received: stopped after batch {batches_seen(trainer, pl_module)} (epoch "
            f"{trainer.current_epoch}) and saved {self.path}; continue with ckpt_path={self.path}.", signum=wanted)

    def _handle(self, signum: int, frame) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        self.request(signum)

    def _restore_handlers(self, *hook_args: Any) -> None:
        """Puts the previous signal handlers back (at the end of training, normal or not)."""
        for signum, handler in self._previous_handlers.items():
            if signal.getsignal(signum) == self._handle:
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous_handlers.clear()

    on_train_end = on_exception = _restore_handlers
