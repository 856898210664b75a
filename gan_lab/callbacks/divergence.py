"""Divergence guard: stops a run whose losses or weights blew up, before it overwrites a good checkpoint."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor

from gan_lab.callbacks.cadence import batches_seen
from gan_lab.constraints import Count, Positive
from gan_lab.distributed import reduce_over_processes
from gan_lab.errors import TrainingDiverged


class DivergenceGuard(L.Callback):
    """Stops training on NaN/Inf losses or weights, or on losses beyond a bound: marks the run ``diverged`` in the
    loggers and raises :class:`~gan_lab.errors.TrainingDiverged` (all DDP processes together). Also checks at every
    epoch end, before the epoch checkpoint.

    Args:
        max_abs_loss: bound on ``|loss term|`` (``None``: only NaN/Inf are checked).
        patience: consecutive checks beyond ``max_abs_loss`` before stopping.
        check_every_n_batches: batches between checks (``None``: ``trainer.log_every_n_steps``; if that is 0,
            epoch ends only).
        check_weights: also check that every weight is finite.
        checkpoint: the last good checkpoint, named in the message (``<run>/checkpoints/last.ckpt``).
    """

    def __init__(self, max_abs_loss: Positive | None = 1.0e4, patience: Count = 3,
                 check_every_n_batches: Count | None = None, check_weights: bool = True,
                 checkpoint: str | None = None) -> None:
        self.max_abs_loss = None if max_abs_loss is None else float(max_abs_loss)
        self.patience = int(patience)
        self.check_every_n_batches = check_every_n_batches
        self.check_weights = bool(check_weights)
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.strikes = 0
        self._batches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._batches += 1
        seen = getattr(pl_module, "batches_seen", self._batches)  # the unit the module logs in
        every = self.check_every_n_batches or trainer.log_every_n_steps
        if not every or seen % every:  # after every `every` batches, as the module logs (GAN.is_logging_step)
            return
        terms = outputs if isinstance(outputs, Mapping) else {}
        self.check(trainer, pl_module, {k: v for k, v in terms.items() if torch.is_tensor(v)})

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # runs before the epoch checkpoint (ModelCheckpoint hooks come last): never save NaN weights
        self.check(trainer, pl_module, {}, bound=False)

    def weights_finite(self, pl_module: L.LightningModule) -> bool:
        """True when every parameter and buffer is finite (one host synchronisation)."""
        norm = self._weights_norm(pl_module)
        return norm is None or bool(torch.isfinite(norm))

    def check(self, trainer: L.Trainer, pl_module: L.LightningModule, terms: Mapping[str, Tensor],
              bound: bool = True) -> None:
        names = list(terms)
        values = [terms[k].detach().float().reshape(-1)[:1] for k in names]
        norm = self._weights_norm(pl_module) if self.check_weights else None
        if norm is not None:
            names.append("weights")
            values.append(norm.reshape(1))
        if not values:
            return
        # averaged over the processes (a NaN anywhere is a NaN everywhere), so that they all stop together
        read = reduce_over_processes(torch.cat([v.to(values[0].device) for v in values]), trainer.world_size)
        found = dict(zip(names, read.cpu().tolist()))  # the one sync
        bad = {k: v for k, v in found.items() if not math.isfinite(v)}
        if bad:
            self.stop(trainer, pl_module, bad, "is not finite")
        if not bound or self.max_abs_loss is None:
            return
        over = {k: v for k, v in found.items() if k != "weights" and abs(v) > self.max_abs_loss}
        self.strikes = self.strikes + 1 if over else 0
        if self.strikes >= self.patience:
            self.stop(trainer, pl_module, over,
                      f"stayed beyond max_abs_loss={self.max_abs_loss:g} for {self.strikes} checks")

    def _weights_norm(self, pl_module: L.LightningModule) -> Tensor | None:
        tensors = [t.detach() for t in pl_module.parameters()]
        tensors += [b.detach() for b in pl_module.buffers() if b.is_floating_point()]
        if not tensors:
            return None
        # a sum of per-tensor norms is NaN/Inf exactly when some element is (overflow aside)
        return torch.stack([torch.linalg.vector_norm(t.float()) for t in tensors]).sum()

    def stop(self, trainer: L.Trainer, pl_module: L.LightningModule, values: dict[str, float],
             what: str) -> None:
        step = batches_seen(trainer, pl_module)
        for logger in trainer.loggers:
            logger.log_metrics({"diverged": 1.0}, step=step)
            if isinstance(logger, WandbLogger):
                logger.experiment.summary["status"] = "diverged"
            logger.save()
        shown = ", ".join(f"{'' if k == 'weights' else 'train/'}{k}={v:.4g}" for k, v in values.items())
        kept = (f"the last good checkpoint {self.checkpoint} was kept" if self.checkpoint and self.checkpoint.is_file()
                else "no checkpoint had been written yet")
        raise TrainingDiverged(
            f"training diverged at batch {step} (epoch {trainer.current_epoch}): {shown} {what}; {kept}; "
            f"lower the learning rates (e.g. optimizer.discriminator.lr=1e-4 optimizer.generator.lr=1e-4) "
            f"or change the loss, then start again.", step=step, values=values)

    def state_dict(self) -> dict[str, Any]:
        return {"strikes": self.strikes, "batches": self._batches}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.strikes = int(state_dict.get("strikes", 0))
        self._batches = int(state_dict.get("batches", 0))


def divergence_guard(trainer: L.Trainer) -> DivergenceGuard | None:
    """The trainer's divergence guard, if it has one."""
    return next((cb for cb in trainer.callbacks if isinstance(cb, DivergenceGuard)), None)
