"""Train a GAN: ``python -m gan_lab.run [group=option ...] [key=value ...]``.

``train(cfg)`` does the work (tests call it with a composed config); ``main`` is the Hydra entry
point, which turns a :class:`~gan_lab.errors.UserError` into one line on stderr and exit status 2,
and returns ``optimized_metric`` to sweepers.
"""
from __future__ import annotations

import logging
import math
import sys
import time
import warnings
from pathlib import Path

import hydra
import lightning as L
from hydra.experimental.callback import Callback
import torch
from omegaconf import DictConfig

from gan_lab.build import build_callbacks, build_datamodule, build_loggers, build_model, build_trainer, resolved
from gan_lab.callbacks.resume import stopped_by_time_limit
from gan_lab.checkpoint_io import read_checkpoint
from gan_lab.errors import TrainingDiverged, TrainingInterrupted, UserError, report_user_error
from gan_lab.fs import probe_writable
from gan_lab.metrics.records import read_metrics_json, update_metrics_json

log = logging.getLogger("gan_lab")

# Validation data feeds the metric callbacks, not a Lightning validation loop.
warnings.filterwarnings("ignore", message=r".*val_dataloader.* but have no .*validation_step")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


class OutputDirCheck(Callback):
    """Hydra callback: an unwritable ``hydra.run.dir``/``hydra.sweep.dir`` is one line, not Hydra's
    traceback (Hydra creates the directory before ``main`` runs)."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config, "run")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config, "sweep")

    @classmethod
    def _check(cls, config: DictConfig, kind: str) -> None:
        from hydra.core.hydra_config import HydraConfig

        # the default directory names the run after ${hydra:runtime.choices...}, which resolves only
        # once Hydra's own config is published (Hydra does this itself right after this hook)
        HydraConfig.instance().set_config(config)
        cls._probe(config.hydra[kind].dir, f"hydra.{kind}.dir")

    @staticmethod
    def _probe(path: str, key: str) -> None:
        try:
            probe_writable(path)
        except OSError as exc:
            print(f"gan_lab: error: the run directory {path} cannot be written ({exc.strerror}); choose "
                  f"another with {key}=<path>.", file=sys.stderr)
            sys.exit(2)


def check_paths(cfg: DictConfig) -> Path:
    """The run directory must be writable and a resume checkpoint must exist, before any work."""
    run_dir = Path(cfg.run_dir)
    try:
        probe_writable(run_dir)
    except OSError as exc:
        raise UserError(f"the run directory {run_dir} is not writable ({exc.strerror}); choose another "
                        f"with hydra.run.dir=<path>.") from None
    if cfg.ckpt_path is not None and not Path(cfg.ckpt_path).is_file():
        raise UserError(f"ckpt_path={cfg.ckpt_path} does not exist; pass <run>/checkpoints/last.ckpt "
                        f"of an earlier run, or drop ckpt_path to start afresh.")
    if cfg.ckpt_path is not None:
        read_checkpoint(cfg.ckpt_path, mmap=True)  # readable, and a run's checkpoint (tensors only mapped)
    return run_dir


def final_metrics(trainer: L.Trainer) -> dict[str, float]:
    """The last logged value of every ``group/name`` metric."""
    return {k: float(v) for k, v in trainer.callback_metrics.items()
            if "/" in k and torch.is_tensor(v) and v.numel() == 1}


class RunSummary(L.Callback):
    """Writes the training summary into ``metrics.json`` from process 0 of the processes that train.

    With ``ddp_spawn`` strategies training happens in worker processes, and Lightning hands back to
    the main process only the weights, the trainer state and the logged metrics: the main process's
    trainer never counted epochs or optimiser steps, nor its module batches or images. Writing from
    the training processes keeps the summary true for every strategy.

    Args:
        path: the run's ``metrics.json`` (other keys of the file, such as evaluations, are kept).
        start: ``time.time()`` when training was started, for ``train_seconds``.
    """

    def __init__(self, path: str | Path, start: float) -> None:
        self.path, self.start = Path(path), start

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not stopped_by_time_limit(trainer):
            self.write(trainer, pl_module, "completed")
            return
        # trainer.max_time ended the run (mid-epoch or at an epoch end): resumable as an interruption,
        # as ExactResume says
        self.write(trainer, pl_module, "interrupted", reason="max_time")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exc: BaseException) -> None:
        if isinstance(exc, TrainingDiverged):
            values = {k: v if math.isfinite(v) else str(v) for k, v in exc.values.items()}  # strict JSON
            self.write(trainer, pl_module, "diverged",
                       diverged={"batch": exc.step, "values": values, "message": str(exc)})
        elif isinstance(exc, TrainingInterrupted):
            self.write(trainer, pl_module, "interrupted", signal=exc.signum)

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, status: str, **extra) -> None:
        if not trainer.is_global_zero:
            return
        update_metrics_json(self.path, {  # keeps the callbacks' evaluations
            "status": status,
            "epochs": trainer.current_epoch,
            "batches_seen": pl_module.batches_seen,
            "images_seen": pl_module.images_seen,
            "optimizer_steps": trainer.global_step,
            "train_seconds": round(time.time() - self.start, 2),
            "final": final_metrics(trainer),
            **extra,
        })
        print(f"gan_lab: run directory {self.path.parent.resolve()}")


def train(cfg: DictConfig) -> float | None:
    """Build everything from ``cfg``, train, write ``metrics.json`` and return ``optimized_metric``."""
    run_dir = check_paths(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg)
    loggers = build_loggers(cfg)
    summary = RunSummary(run_dir / "metrics.json", start=time.time())
    trainer = build_trainer(cfg, [*build_callbacks(cfg), summary], loggers)
    for logger in loggers:
        logger.log_hyperparams(resolved(cfg))
    log.info("run directory: %s", run_dir.resolve())
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    if trainer.is_global_zero:
        # Under ddp_spawn the module trained in worker processes and came back with their weights
        # only: take its counters from the summary their process 0 wrote (a no-op otherwise).
        written = read_metrics_json(summary.path)
        model.batches_seen = written.get("batches_seen", model.batches_seen)
        model.images_seen = written.get("images_seen", model.images_seen)
    metrics = final_metrics(trainer)  # ddp_spawn hands the logged metrics back to this process
    name = cfg.get("optimized_metric")
    if name is None:
        return None
    if name not in metrics:
        raise UserError(f"optimized_metric={name} was not logged by this run; use one of "
                        f"{', '.join(sorted(metrics)) or 'the logged metrics'}.")
    return metrics[name]


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        return train(cfg)
    except TrainingInterrupted as exc:
        print(f"gan_lab: {exc}", file=sys.stderr)
        sys.exit(128 + exc.signum)  # the shell's convention for a signal (130 Ctrl-C, 143 SIGTERM)
    except Exception as exc:  # noqa: BLE001 - user errors become one line, bugs keep their trace
        if not report_user_error(exc):
            raise
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return math.nan  # a sweep goes on with its next job
        sys.exit(2)


if __name__ == "__main__":
    main()
