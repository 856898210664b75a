"""Exact resumption and graceful interruption.

Lightning restores weights, optimiser and scheduler states and its loop counters from a
checkpoint, but not the global random number generators, and it restarts a half-finished epoch
from the first batch of the DataLoader. ``ExactResume`` closes both gaps so that training N
batches in one go and N/2 + resume for N/2 give identical weights:

- the Python, NumPy and torch (CPU and CUDA) generator states are saved with the checkpoint and
  restored on resume; under DDP those of every rank (each rank draws its own noise), and each
  rank restores its own;
- the number of batches already trained in the current epoch is saved, and on a mid-epoch resume
  the data order's sampler (``EpochSampler``, a function of (seed, epoch); under DDP each rank's
  share of it) skips the samples already served.

It also turns SIGTERM (what SLURM sends before pre-emption) and Ctrl-C into a resumable
checkpoint: the signal only sets a flag, the batch in progress finishes (an interruption between
the D and G updates could not be resumed exactly), then ``<dirpath>/last.ckpt`` is written and
training stops with :class:`~gan_lab.errors.TrainingInterrupted`; under DDP every rank stops after
the same batch, the first at whose end any rank had received the signal. A second Ctrl-C stops at once.

A time limit (``trainer.max_time``, Lightning's ``Timer``) reached in the middle of an epoch ends
that epoch early, and Lightning's epoch-end checkpoint would resume at the *next* epoch, silently
skipping the rest of this one. ``ExactResume`` writes a mid-epoch checkpoint at the batch where the
Timer stopped and, once the fit has ended normally (epoch-end hooks, evaluations, final grids),
puts it in place of ``last.ckpt`` (it must follow the Timer in the callback list, see
:func:`after_timer`). The Timer restores its count only from a part that had a Timer too, so the
training time of every part is saved here as well (``train_seconds``) and the Timer starts from it.
"""
from __future__ import annotations

import logging
import math
import os
import random
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Timer

from gan_lab.callbacks.limit import batch_limit
from gan_lab.callbacks.steps import batches_seen
from gan_lab.errors import TrainingInterrupted, UserError

log = logging.getLogger(__name__)

#: Lightning's warning on every mid-epoch resume; the resume is exact when the sampler skips what was served
NOT_RESUMABLE = (r"You're resuming from a checkpoint that ended before the epoch ended and your dataloader is "
                 r"not resumable")


def trained_seconds(checkpoint: dict[str, Any]) -> float:
    """Training time of every part of the run that wrote ``checkpoint``: gan_lab's own count (kept
    whether or not a part had a time limit) or the ``Timer``'s, whichever is larger."""
    seconds = 0.0
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if not isinstance(state, dict):
            continue
        if "ExactResume" in str(key):
            seconds = max(seconds, float(state.get("train_seconds", 0.0)))
        elif "Timer" in str(key):
            seconds = max(seconds, float((state.get("time_elapsed") or {}).get("train", 0.0)))
    return seconds


def epochs_completed(checkpoint: dict[str, Any]) -> tuple[int, int | None]:
    """(epochs completed, batches trained in the epoch in progress or ``None``) of a checkpoint.

    Lightning saves the 0-based index of the current epoch: an epoch-end checkpoint closes epoch
    ``epoch`` (so ``epoch + 1`` are complete); a mid-epoch one (a signal, ``trainer.max_time`` or
    ``trainer.max_batches`` inside an epoch) is ``batch_in_epoch`` batches into epoch ``epoch``."""
    epoch = int(checkpoint.get("epoch", 0))
    state = next((v for k, v in (checkpoint.get("callbacks") or {}).items()
                  if "ExactResume" in str(k) and isinstance(v, dict)), {})
    if state.get("mid_epoch"):
        return epoch, int(state.get("batch_in_epoch", 0))
    return epoch + 1, None


def rng_state() -> dict[str, Any]:
    """The global generator states, as plain values a checkpoint can hold (no NumPy objects)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, keys.tolist(), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def rank_and_world_size(trainer: L.Trainer | None = None) -> tuple[int, int]:
    """This process's rank and the number of processes (0 and 1 outside DDP)."""
    if trainer is not None:
        return trainer.global_rank, trainer.world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def gather(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rank's ``state``, in rank order (a collective under DDP: every rank must call it)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [state]
    states: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states


def time_limit(trainer: L.Trainer) -> Timer | None:
    """Lightning's ``Timer`` of ``trainer.max_time`` (or one passed as a callback), if any."""
    return next((cb for cb in trainer.callbacks if isinstance(cb, Timer) and cb.time_remaining() is not None),
                None)


def dhms(seconds: float) -> str:
    """A duration as hours, minutes and seconds (``49:30:00``)."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def trainer_max_time(trainer: L.Trainer) -> str:
    """The time limit as hours, minutes and seconds."""
    timer = time_limit(trainer)
    return dhms(timer.time_remaining() + timer.time_elapsed()) if timer is not None else "none"


def stopped_by_time_limit(trainer: L.Trainer) -> bool:
    """Whether a fit that ended normally was ended by ``trainer.max_time`` before its epochs or steps."""
    timer = time_limit(trainer)
    if timer is None or timer.time_remaining() > 0:
        return False
    if any(isinstance(cb, ExactResume) and cb.time_limit_checkpoint is not None for cb in trainer.callbacks):
        return True  # it cut an epoch short (maybe the last one)
    epochs_left = trainer.max_epochs is None or trainer.max_epochs < 0 or trainer.current_epoch < trainer.max_epochs
    steps_left = trainer.max_steps < 0 or trainer.global_step < trainer.max_steps
    return epochs_left and steps_left


def epoch_cut_short(trainer: L.Trainer) -> int | None:
    """At the end of an epoch that ``trainer.max_time`` or ``trainer.max_batches`` ended early: the
    batches trained in it (the epoch is not complete); ``None`` otherwise."""
    return next((cb.cut_at for cb in trainer.callbacks if isinstance(cb, ExactResume)), None)


def after_timer(trainer: L.Trainer) -> L.Trainer:
    """Put Lightning's Timer before ``ExactResume`` in ``trainer.callbacks``, so that at the end of
    a batch the Timer decides first and ``ExactResume`` turns a mid-epoch time limit into a
    mid-epoch checkpoint (Lightning appends the Timer after the user's callbacks)."""
    timers = [cb for cb in trainer.callbacks if isinstance(cb, Timer)]
    rest = [cb for cb in trainer.callbacks if not isinstance(cb, Timer)]
    at = next((i for i, cb in enumerate(rest) if isinstance(cb, ExactResume)), None)
    if timers and at is not None:
        trainer.callbacks = rest[:at] + timers + rest[at:]
    return trainer


class ExactResume(L.Callback):
    """Saves what Lightning does not (generator states, position in the epoch) and handles signals.

    Args:
        dirpath: folder of the interruption checkpoint (``<run>/checkpoints``, where
            ``last.ckpt`` lives, so that ``ckpt_path=<run>/checkpoints/last.ckpt`` always resumes).
        filename: name of the interruption checkpoint.
        signals: signal names that request a graceful stop (``SIGTERM``, ``SIGINT``).
    """

    def __init__(self, dirpath: str, filename: str = "last.ckpt",
                 signals: tuple[str, ...] | list[str] = ("SIGTERM", "SIGINT")) -> None:
        self.path = Path(dirpath) / filename
        self.signals = [getattr(signal, name) for name in signals]
        self.batch_in_epoch = 0
        self.requested: int | None = None
        self._pending: dict[str, Any] | None = None
        self._previous_handlers: dict[int, Any] = {}
        self.time_limit_checkpoint: Path | None = None  # written when trainer.max_time cut an epoch short
        self.batch_limit_checkpoint: Path | None = None  # written when trainer.max_batches cut an epoch short
        self.seconds_before = 0.0  # training time of the earlier parts of the run (from the checkpoint)
        self._train_start: float | None = None
        self._timer_synced = False
        self._quiet: tuple | None = None  # the warnings filter of NOT_RESUMABLE, while it is installed
        self.cut_at: int | None = None  # batches into the epoch that a limit (max_time, max_batches) cut short

    # --- checkpoint state -------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        # Lightning asks every rank for the checkpoint's content before rank 0 writes it, so the
        # ranks' generator states can be gathered here: "rng" holds one state per rank.
        return {"rng": gather(rng_state()), "batch_in_epoch": self.batch_in_epoch, "mid_epoch": self._mid_epoch,
                "train_seconds": self.train_seconds()}

    def train_seconds(self) -> float:
        """Training time of the whole run so far (this part and the earlier ones), with or without a
        time limit: ``trainer.max_time`` counts it on a resume (see :meth:`on_fit_start`). While a
        time limit runs, its Timer (set to count the earlier parts) is the clock."""
        timer = time_limit(self._trainer) if getattr(self, "_trainer", None) is not None else None
        if timer is not None and self._timer_synced:
            return float(timer.time_elapsed())
        now = time.monotonic() - self._train_start if self._train_start is not None else 0.0
        return self.seconds_before + now

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Called after every ``setup`` hook (where the module derives its per-rank streams under
        # DDP) and before ``on_fit_start``.
        own = self._own_rng_state(state_dict["rng"])
        self.seconds_before = float(state_dict.get("train_seconds", 0.0))
        if not state_dict.get("mid_epoch"):
            # An epoch-boundary checkpoint: restore now, before Lightning creates the next epoch's
            # DataLoader iterator (which draws its base seed from torch's generator, as the
            # uninterrupted run did right after saving).
            if own is not None:
                set_rng_state(own)
            self.batch_in_epoch = 0
            return
        # applied in on_train_start, once the DataLoader (and its iterator) exists
        self._pending = {"rng": own, "batch_in_epoch": state_dict["batch_in_epoch"]}

    def _own_rng_state(self, states: list[dict[str, Any]]) -> dict[str, Any] | None:
        """This rank's generator states among those of a checkpoint (one per rank of the run that
        wrote it), or ``None`` for a rank the writing run did not have (it keeps the stream the
        module derived for it)."""
        states = list(states)
        rank, world_size = rank_and_world_size(getattr(self, "_trainer", None))
        if len(states) != world_size and rank == 0:
            log.warning("the checkpoint was written by %d process(es) and training resumes with %d: the "
                        "data shards and the batch differ, so the run is not an exact continuation.",
                        len(states), world_size)
        return states[rank] if rank < len(states) else None

    @property
    def _mid_epoch(self) -> bool:
        trainer = getattr(self, "_trainer", None)
        if trainer is None or not self.batch_in_epoch:
            return False
        return self.batch_in_epoch < trainer.num_training_batches

    # --- hooks ------------------------------------------------------------------------------

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.time_limit_checkpoint = self.batch_limit_checkpoint = self.cut_at = None
        timer = time_limit(trainer)  # restored from the checkpoint by now
        if timer is not None:
            # Lightning's Timer restores its elapsed time only from a part that had a Timer too: count
            # every part (the offset is the Timer's own record of earlier parts)
            self.seconds_before = max(self.seconds_before, float(timer._offset))
            timer._offset = self.seconds_before
            self._timer_synced = True
        if timer is not None and timer.time_remaining() <= 0 and trainer.ckpt_path:
            raise UserError(f"the time limit trainer.max_time ({trainer_max_time(trainer)} of training) is already "
                            f"spent: the run of ckpt_path={trainer.ckpt_path} trained for {dhms(timer.time_elapsed())}; "
                            f"raise trainer.max_time (it counts the time of every part of the run).")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._train_start = time.monotonic()
        if self._pending is not None:
            self.batch_in_epoch = int(self._pending["batch_in_epoch"])
            if self._skip_served_samples(trainer, self.batch_in_epoch):
                # exact, so Lightning's "not resumable ... unreliable results" (warned before the first
                # batch of this fit) is wrong here: silenced until then
                warnings.filterwarnings("ignore", message=NOT_RESUMABLE)
                self._quiet = warnings.filters[0]
            if self._pending["rng"] is not None:
                set_rng_state(self._pending["rng"])
            self._pending = None
        self._install_handlers()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.batch_in_epoch = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._warn_again()

    def _warn_again(self) -> None:
        """Remove the filter of :data:`NOT_RESUMABLE` (another fit in this process may not be exact)."""
        if self._quiet is not None and self._quiet in warnings.filters:
            warnings.filters.remove(self._quiet)
        self._quiet = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning ends the epoch here even when max_steps cut it short: checkpoints written from
        # now on (the epoch checkpoint comes after this hook) resume at the next epoch's start.
        self.batch_in_epoch = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batch_in_epoch += 1
        agreed = self._agreed_request(trainer)
        if agreed is not None:
            self.requested = agreed  # never reset here: a signal may arrive while the ranks agree
        if agreed is None and self._mid_epoch and self._out_of_time(trainer):
            self._save_time_limit_checkpoint(trainer)
            return  # Lightning ends the epoch and the run normally (epoch-end hooks, evaluation)
        limit = batch_limit(trainer)
        if agreed is None and self._mid_epoch and limit is not None and limit.reached(pl_module):
            self.batch_limit_checkpoint = self._save_limit_checkpoint(trainer, "max_batches")
            return
        if agreed is None or not self._mid_epoch:
            # a signal during the last batch of an epoch is served after the epoch-end hooks
            # (scheduler step, epoch checkpoint), at the end of the next batch
            return
        name = signal.Signals(self.requested).name
        seen = batches_seen(trainer, pl_module)
        if not self._weights_finite(trainer, pl_module):
            # the run diverged (the guard had not checked since): said and recorded as such, and
            # last.ckpt keeps the last good state
            guard = next(cb for cb in trainer.callbacks if hasattr(cb, "weights_finite"))
            guard.stop(trainer, pl_module, {"weights": math.nan},
                       f"is not finite ({name} received; no checkpoint was written)")
        trainer.save_checkpoint(self.path, weights_only=False)
        raise TrainingInterrupted(
            f"{name} received: stopped after batch {seen} (epoch {trainer.current_epoch}) and "
            f"saved {self.path}; continue with ckpt_path={self.path}.", signum=self.requested)

    @staticmethod
    def _out_of_time(trainer: L.Trainer) -> bool:
        """Whether the Timer (before this callback) stopped training on this batch: its decision,
        taken on process 0 and the same on every process."""
        timer = time_limit(trainer)
        if not trainer.should_stop or timer is None:
            return False
        return bool(trainer.strategy.broadcast(timer.time_remaining() <= 0))

    @staticmethod
    def _weights_finite(trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
        guard = next((cb for cb in trainer.callbacks if hasattr(cb, "weights_finite")), None)
        return guard is None or guard.weights_finite(pl_module)

    def _save_time_limit_checkpoint(self, trainer: L.Trainer) -> None:
        self.time_limit_checkpoint = self._save_limit_checkpoint(trainer, "max_time")

    def _save_limit_checkpoint(self, trainer: L.Trainer, limit: str) -> Path | None:
        """The mid-epoch checkpoint of a limit (``trainer.max_time`` or ``trainer.max_batches``), written
        now (this batch's state, before the epoch-end hooks step the schedulers) beside ``last.ckpt``;
        it replaces the epoch-end ``last.ckpt`` once the fit has ended (:meth:`on_fit_end`)."""
        if not self._weights_finite(trainer, trainer.lightning_module):
            log.warning("trainer.%s reached with non-finite weights: no mid-epoch checkpoint written.", limit)
            return None
        path = self.path.with_name(f".{limit}.{self.path.name}")
        trainer.save_checkpoint(path, weights_only=False)
        self.cut_at = self.batch_in_epoch
        return path

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        for limit_checkpoint in (self.time_limit_checkpoint, self.batch_limit_checkpoint):
            if limit_checkpoint is not None:
                os.replace(limit_checkpoint, self.path)  # after every epoch-end save of last.ckpt
        if stopped_by_time_limit(trainer):  # mid-epoch or at an epoch end
            print(f"gan_lab: the time limit trainer.max_time ({trainer_max_time(trainer)} of training) was "
                  f"reached after batch {batches_seen(trainer, pl_module)}, saved in "
                  f"{self.path}; continue with ckpt_path={self.path} and a larger trainer.max_time (it counts "
                  f"the time of every part of the run).", file=sys.stderr)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()
        self._warn_again()
        self.seconds_before, self._train_start = self.train_seconds(), None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()
        self._warn_again()

    # --- helpers ----------------------------------------------------------------------------

    def _skip_served_samples(self, trainer: L.Trainer, batches: int) -> bool:
        """Make the sampler skip what the interrupted part served; whether it could (an exact resume)."""
        loader = trainer.train_dataloader
        sampler = getattr(loader, "sampler", None)
        if not hasattr(sampler, "skip_next"):
            log.warning("resuming mid-epoch with a sampler that cannot skip served samples (%s): the "
                        "rest of this epoch repeats its first batches.", type(sampler).__name__)
            return False
        sampler.skip_next(batches * loader.batch_size)
        return True

    def _agreed_request(self, trainer: L.Trainer) -> int | None:
        """The stop request, the same on every rank. A signal reaches the DDP processes at slightly
        different times, so at every batch end they agree (a request on any rank stops them all)
        before any of them saves: otherwise one rank would wait in the checkpoint's collectives while
        the others train the next batch. One small all-reduce per batch; Lightning itself already
        broadcasts its own SIGTERM flag to the ranks at every batch under DDP."""
        dist = torch.distributed
        if trainer.world_size == 1 or not (dist.is_available() and dist.is_initialized()):
            return self.requested
        flag = torch.tensor([self.requested or 0], device=trainer.strategy.root_device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item()) or None

    def _handle(self, signum: int, frame) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        self.requested = signum
        log.warning("%s received: finishing the current batch, then saving %s.",
                    signal.Signals(signum).name, self.path)

    def _install_handlers(self) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        self.requested = None
        for signum in self.signals:
            self._previous_handlers[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            if signal.getsignal(signum) == self._handle:
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous_handlers.clear()
