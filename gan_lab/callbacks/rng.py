"""Random generator states (Python, NumPy, torch CPU and CUDA), saved with every checkpoint and restored on resume."""
from __future__ import annotations

import logging
import random
from typing import Any

import lightning as L
import numpy as np
import torch

from gan_lab.callbacks.resume import loader_workers, written_mid_epoch

log = logging.getLogger(__name__)


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


def gather(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rank's ``state``, in rank order (a collective under DDP: every rank must call it)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [state]
    states: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states


class RngState(L.Callback):
    """Saves every process's generator states with each checkpoint; on resume each process restores its own at
    the point where the uninterrupted run was in its stream."""

    def __init__(self) -> None:
        self._trainer: L.Trainer | None = None
        self._checkpoint_mid_epoch = False
        self._pending: dict[str, Any] | None = None  # a mid-epoch checkpoint's states, for on_train_start

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        # Lightning asks every rank for this before rank 0 writes: "rng" gathers one state per rank
        return {"rng": gather(rng_state())}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # called before load_state_dict, with the whole checkpoint: where in the epoch it was written
        self._checkpoint_mid_epoch = written_mid_epoch(checkpoint)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # after every setup hook (ours sets self._trainer, the module's its per-rank streams), before on_fit_start
        states = list(state_dict["rng"])
        rank, world_size = self._trainer.global_rank, self._trainer.world_size
        if len(states) != world_size and rank == 0:
            log.warning("the checkpoint was written by %d process(es) and training resumes with %d: the "
                        "data shards and the batch differ, so the run is not an exact continuation.",
                        len(states), world_size)
        if rank >= len(states):
            return  # a rank the writing run did not have
        if self._checkpoint_mid_epoch or loader_workers(getattr(self._trainer, "datamodule", None)) > 0:
            self._pending = states[rank]  # the epoch's DataLoader iterator is created before on_train_start
        else:
            set_rng_state(states[rank])  # before Lightning creates the next epoch's DataLoader iterator

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is not None:
            set_rng_state(self._pending)
            self._pending = None
