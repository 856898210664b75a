"""Training time of every part of a run, saved with every checkpoint; ``trainer.max_time`` counts it."""
from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Timer

from gan_lab.compat import set_timer_train_seconds, timer_train_seconds


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


def trained_seconds(checkpoint: dict[str, Any]) -> float:
    """Training time of the run that wrote ``checkpoint``: the larger of :class:`TrainingClock`'s and the Timer's."""
    seconds = 0.0
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if key == TrainingClock.__qualname__ and isinstance(state, dict):
            seconds = max(seconds, float(state.get("train_seconds", 0.0)))
        elif (timer := timer_train_seconds(key, state)) is not None:
            seconds = max(seconds, timer)
    return seconds


class TrainingClock(L.Callback):
    """Counts the training time of every part of a run and makes ``trainer.max_time`` count it too (a resume
    whose limit is already spent is refused before training, by ``gan_lab.run``)."""

    def __init__(self) -> None:
        self.seconds_before = 0.0  # training time of the earlier parts of the run (from the checkpoint)
        self._train_start: float | None = None
        self._timer: Timer | None = None  # the time limit of this fit, set to count the earlier parts

    def state_dict(self) -> dict[str, Any]:
        return {"train_seconds": self.train_seconds()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.seconds_before = float(state_dict.get("train_seconds", 0.0))

    def train_seconds(self) -> float:
        """Training time of the whole run so far; while a time limit runs, its Timer is the clock."""
        if self._timer is not None:
            return float(self._timer.time_elapsed())
        now = time.monotonic() - self._train_start if self._train_start is not None else 0.0
        return self.seconds_before + now

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._timer = timer = time_limit(trainer)  # restored from the checkpoint by now
        if timer is None:
            return
        # before training the Timer's elapsed time covers only earlier parts that had a Timer: count every part
        self.seconds_before = max(self.seconds_before, float(timer.time_elapsed()))
        set_timer_train_seconds(timer, self.seconds_before)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._train_start = time.monotonic()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds_before, self._train_start, self._timer = self.train_seconds(), None, None
