"""Graceful interruption: SIGTERM (what SLURM sends before pre-emption), SIGUSR2 (its warning ahead of a
time limit) and Ctrl-C save a resumable checkpoint.

The signal only sets a flag; the batch in progress finishes (an interruption between the D and G
updates could not be resumed exactly), then ``<dirpath>/last.ckpt`` is written mid-epoch and training
stops with :class:`~gan_lab.errors.TrainingInterrupted`. Under DDP every process stops after the same
batch, the first at whose end any process had received the signal, and they save one checkpoint
together. A signal during the last batch of an epoch is served at the end of the next batch, after
the epoch-end hooks (scheduler step, epoch checkpoint). A signal that finds the weights non-finite
ends the run as diverged, without a checkpoint. A second Ctrl-C stops at once.

Lightning 2.6 has its own SIGTERM handling (``trainer.received_sigterm``), which cannot give these
guarantees: after the batch (even the last of an epoch, before its epoch-end hooks) it raises
``SIGTERMException``, a ``SystemExit`` with exit status 0, without writing a checkpoint, and it
checks its flag after every callback's end-of-batch hook, so a signal that arrives after a
callback's turn finds no one to save; under DDP each process checks its own flag there, and its
handler calls a DDP broadcast from inside the signal handler, so the processes need not stop after
the same batch. On Ctrl-C it stops at once, unsaved. ``GracefulStop`` therefore puts its own handler
in place of Lightning's while training runs (and gives it back when training ends), and serves a
SIGTERM that Lightning's handler caught before training started (``trainer.received_sigterm``) after
the first batch (in a single process; under DDP Lightning's own check before the first batch ends
the run first).

It is a Lightning ``Checkpoint`` callback, and Lightning runs checkpoint callbacks after all others:
at the end of a batch every other callback (EMA of G, sample grids, limits) has done its work on that
batch before it saves.
"""
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
    """On a signal, finishes the batch, saves ``last.ckpt`` and stops with ``TrainingInterrupted``.

    Args:
        dirpath: folder of the interruption checkpoint (``<run>/checkpoints``, where
            ``last.ckpt`` lives, so that ``ckpt_path=<run>/checkpoints/last.ckpt`` always resumes).
        filename: name of the interruption checkpoint.
        signals: signal names that request a graceful stop (``SIGTERM``, ``SIGINT``, and ``SIGUSR2``,
            SLURM's warning ahead of a time limit, after which the job is requeued: gan_lab.slurm).
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

    # --- hooks ------------------------------------------------------------------------------

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.requested = None
        self._install_handlers()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        wanted = self.requested
        if wanted is None and trainer.received_sigterm and signal.SIGTERM in self.signals:
            wanted = signal.SIGTERM  # caught by Lightning's handler before ours was installed
        agreed = self._agreed(trainer, wanted)
        if agreed is None:
            return
        self.requested = agreed  # never reset here: a signal may arrive while the ranks agree
        if ends_epoch(trainer, batch_idx):
            return  # served at the end of the next batch, after the epoch-end hooks
        name = signal.Signals(agreed).name
        guard = divergence_guard(trainer)
        if guard is not None and not guard.weights_finite(pl_module):
            # the run diverged (the guard had not checked since): said and recorded as such, and
            # last.ckpt keeps the last good state
            guard.stop(trainer, pl_module, {"weights": math.nan},
                       f"is not finite ({name} received; no checkpoint was written)")
        trainer.save_checkpoint(self.path, weights_only=False)
        raise TrainingInterrupted(
            f"{name} received: stopped after batch {batches_seen(trainer, pl_module)} (epoch "
            f"{trainer.current_epoch}) and saved {self.path}; continue with ckpt_path={self.path}.", signum=agreed)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()

    # --- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _agreed(trainer: L.Trainer, wanted: int | None) -> int | None:
        """The stop request, the same on every rank. A signal reaches the DDP processes at slightly
        different times, so at every batch end they agree (a request on any rank stops them all)
        before any of them saves: otherwise one rank would wait in the checkpoint's collectives while
        the others train the next batch. One small all-reduce per batch."""
        if trainer.world_size == 1:
            return wanted
        flag = torch.tensor([wanted or 0], device=trainer.strategy.root_device)
        return int(reduce_over_processes(flag, trainer.world_size, "max").item()) or None

    def _handle(self, signum: int, frame) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        self.request(signum)

    def _install_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in self.signals:
            self._previous_handlers[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            if signal.getsignal(signum) == self._handle:
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous_handlers.clear()
