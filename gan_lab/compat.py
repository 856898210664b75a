"""The private parts of other libraries gan_lab relies on, each in one function or class.

Each has a test in ``tests/test_compat.py`` that fails when an upgrade changes it.
"""
from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn as nn
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.trainer.states import RunningStage
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from gan_lab.fs import atomic_write


def sbatch_script(folder: str | Path, parameters: dict[str, Any]) -> str:
    """The sbatch script submitit writes for an executor's ``parameters``, with ``true`` as its command
    (submitit's private ``_make_sbatch_string``)."""
    from submitit.slurm.slurm import _make_sbatch_string

    return _make_sbatch_string(command="true", folder=folder, **parameters)


# --- torch -------------------------------------------------------------------------------------------


def lerp_(tensors: list[Tensor], targets: list[Tensor], weight: float) -> None:
    """``t <- t + weight * (target - t)`` for each pair, in place (``torch._foreach_lerp_``)."""
    torch._foreach_lerp_(tensors, targets, weight)


def clamp_(tensors: list[Tensor], low: float, high: float) -> None:
    """Clamp each tensor to ``[low, high]`` in place (``torch._foreach_clamp_min_`` / ``_max_``)."""
    torch._foreach_clamp_min_(tensors, low)
    torch._foreach_clamp_max_(tensors, high)


def run_eagerly(module: nn.Module) -> None:
    """Make ``module`` and its submodules run their own ``forward`` again, e.g. a copy of a module compiled
    in place (``Module._compiled_call_impl``)."""
    for m in module.modules():
        if getattr(m, "_compiled_call_impl", None) is not None:
            m._compiled_call_impl = None


def spectrally_normalised(module: nn.Module) -> bool:
    """Whether a weight of ``module`` or a submodule is spectrally normalised (private ``_SpectralNorm``)."""
    from torch.nn.utils.parametrizations import _SpectralNorm

    return any(isinstance(p, _SpectralNorm) for m in module.modules()
               for p in getattr(getattr(m, "parametrizations", None), "weight", []))


class DispatchMode(TorchDispatchMode):
    """A mode that sees every ATen operation below autograd (``torch.utils._python_dispatch``);
    :func:`aten_name` names what its ``__torch_dispatch__`` receives."""


def aten_name(func: Any) -> str:
    """The schema name (``aten::item``) of an operator given to ``__torch_dispatch__``."""
    return func._schema.name


# --- Lightning ---------------------------------------------------------------------------------------


def attached_trainer(module: L.LightningModule) -> L.Trainer | None:
    """The Trainer ``module`` is attached to, or ``None`` (``module.trainer`` raises when there is none)."""
    return module._trainer


def count_optimizer_step(optimizer: Any) -> None:
    """Count one optimiser step of a Lightning-wrapped optimizer (``trainer.global_step``) without
    stepping it, e.g. after a CUDA graph replay (``LightningOptimizer._on_before_step`` / ``_on_after_step``)."""
    optimizer._on_before_step()
    optimizer._on_after_step()


class AppendingExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, continuing an existing ``metrics.csv`` and rewriting it atomically for a new column
    (overrides the private ``_rewrite_with_new_header`` and ``_check_log_dir_exists``)."""

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with open(self.metrics_file_path, "r", newline="") as file:
            reader = csv.DictReader(file)
            rows, header = list(reader), list(reader.fieldnames or [])

        def write(file) -> None:
            writer = csv.DictWriter(file, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)

        try:
            atomic_write(self.metrics_file_path, write, mode="w")
        except BaseException:
            self.metrics_keys = header  # the file's header still: the next save tries the rewrite again
            raise

    def _check_log_dir_exists(self) -> None:
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            self.metrics_keys = next(csv.reader(file), [])  # rows are appended under the file's own header


def appending_experiment(logger: Any) -> AppendingExperimentWriter:
    """The body of a ``CSVLogger.experiment`` that writes with :class:`AppendingExperimentWriter`
    (Lightning's ``_experiment`` and ``_fs``)."""
    if logger._experiment is None:
        logger._fs.makedirs(logger.root_dir, exist_ok=True)
        logger._experiment = AppendingExperimentWriter(log_dir=logger.log_dir)
    return logger._experiment


#: the start of Lightning's warning on a resume from a mid-epoch checkpoint (its training epoch loop)
MID_EPOCH_RESUME_WARNING = "You're resuming from a checkpoint that ended before the epoch ended"


def silence_mid_epoch_resume_warning() -> Any:
    """Ignore Lightning's mid-epoch resume warning until :func:`unsilence` is given the returned handle."""
    warnings.filterwarnings("ignore", message=MID_EPOCH_RESUME_WARNING)
    return warnings.filters[0]


def unsilence(handle: Any) -> None:
    """Remove the warnings filter ``handle`` (from :func:`silence_mid_epoch_resume_warning`), if installed."""
    if handle in warnings.filters:
        warnings.filters.remove(handle)


def timer_train_seconds(key: str, state: Any) -> float | None:
    """The training seconds a checkpoint's ``callbacks[key]`` entry holds when it is Lightning's
    ``Timer`` state (``{"time_elapsed": {"train": s, ...}}``); ``None`` for another callback's."""
    if "Timer" not in str(key) or not isinstance(state, dict):
        return None
    return float((state.get("time_elapsed") or {}).get(RunningStage.TRAINING.value, 0.0))


def set_timer_train_seconds(timer: Timer, seconds: float) -> None:
    """Make ``timer`` count ``seconds`` of training already done (through its state format)."""
    timer.load_state_dict({"time_elapsed": {RunningStage.TRAINING.value: float(seconds)}})


def reload_dataloaders_every_epoch(trainer: L.Trainer) -> None:
    """Make a fit in progress rebuild its training DataLoader every epoch (``reload_dataloaders_every_n_epochs=1``)."""
    if not trainer.reload_dataloaders_every_n_epochs:
        trainer.reload_dataloaders_every_n_epochs = 1
