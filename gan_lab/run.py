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
from gan_lab.errors import TrainingDiverged, TrainingInterrupted, UserError, report_user_error
from gan_lab.fs import probe_writable
from gan_lab.metrics.records import update_metrics_json

log = logging.getLogger("gan_lab")

# Validation data feeds the metric callbacks, not a Lightning validation loop.
warnings.filterwarnings("ignore", message=r".*val_dataloader.* but have no .*validation_step")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


class OutputDirCheck(Callback):
    """Hydra callback: an unwritable ``hydra.run.dir``/``hydra.sweep.dir`` is one line, not Hydra's
    traceback (Hydra creates the directory before ``main`` runs)."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config.hydra.sweep.dir, "hydra.sweep.dir")

    @staticmethod
    def _check(path: str, key: str) -> None:
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
    return run_dir


def train(cfg: DictConfig) -> float | None:
    """Build everything from ``cfg``, train, write ``metrics.json`` and return ``optimized_metric``."""
    run_dir = check_paths(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg)
    loggers = build_loggers(cfg)
    trainer = build_trainer(cfg, build_callbacks(cfg), loggers)
    for logger in loggers:
        logger.log_hyperparams(resolved(cfg))
    log.info("run directory: %s", run_dir.resolve())
    start = time.time()

    def summarize(status: str, **extra) -> dict[str, float]:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                   if "/" in k and torch.is_tensor(v) and v.numel() == 1}
        summary = {
            "status": status,
            "epochs": trainer.current_epoch,
            "batches_seen": model.batches_seen,
            "images_seen": model.images_seen,
            "optimizer_steps": trainer.global_step,
            "train_seconds": round(time.time() - start, 2),
            "final": metrics,
            **extra,
        }
        if trainer.is_global_zero:
            update_metrics_json(run_dir / "metrics.json", summary)  # keeps the callbacks' evaluations
            print(f"gan_lab: run directory {run_dir.resolve()}")
        return metrics

    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    except TrainingDiverged as exc:
        values = {k: v if math.isfinite(v) else str(v) for k, v in exc.values.items()}  # strict JSON
        summarize("diverged", diverged={"batch": exc.step, "values": values, "message": str(exc)})
        raise
    except TrainingInterrupted as exc:
        summarize("interrupted", signal=exc.signum)
        raise
    metrics = summarize("interrupted" if trainer.interrupted else "completed")
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
