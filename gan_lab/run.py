"""Train a GAN: ``python -m gan_lab.run [group=option ...] [key=value ...]``.

:func:`train` does the work; ``main``, the Hydra entry point, returns ``optimized_metric`` to sweepers.
"""
from __future__ import annotations

import contextlib
import difflib
import functools
import logging
import math
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
import torch
from omegaconf import DictConfig, OmegaConf

from gan_lab import CONFIG_DIR, slurm
from gan_lab.build import (batches_per_epoch, build_callbacks, build_datamodule, build_loggers, build_model,
                           build_trainer, check_batch_size, exact_resume, in_multirun, serve_draws, setup_datamodule)
from gan_lab.callbacks.clock import dhms, time_limit, trained_seconds, trainer_max_time
from gan_lab.callbacks.history import History
from gan_lab.callbacks.limit import cut_checkpoint, epoch_cut_short, stopped_by_time_limit
from gan_lab.callbacks.resume import (OptimizerClasses, check_resumed_optimizers, check_resumed_position,
                                     epochs_completed)
from gan_lab.checkpoint_io import read_checkpoint
from gan_lab.constraints import AnyInt, check_value
from gan_lab.errors import TrainingDiverged, TrainingInterrupted, UserError, report_user_error
from gan_lab.fs import DiskFull, write_problem
from gan_lab.callbacks.metrics import MetricsCallback
from gan_lab.metrics.records import read_metrics_json, update_metrics_json
from gan_lab.metrics.suite import loggable_names
from gan_lab.models.checkpoint_state import check_nets
from gan_lab.rundir import (RunDirBackup, RunDirLock, claim_sweep_dir, keep_run_dir_until_accepted, replaces_run,
                            secondary_process)

log = logging.getLogger("gan_lab")

# Validation data feeds the metric callbacks, not a Lightning validation loop.
warnings.filterwarnings("ignore", message=r".*val_dataloader.* but have no .*validation_step")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
# gan_lab counts the logging interval over epochs (batches_seen): a short epoch still logs
warnings.filterwarnings("ignore", message=r".*number of training batches .* is smaller than the logging interval")


@functools.lru_cache(maxsize=None)
def defined_top_level_keys(config_name: str = "config") -> frozenset[str]:
    """Top-level keys defined for entry point ``config_name``: by config.yaml, its config, groups, global presets."""
    keys = set(OmegaConf.load(CONFIG_DIR / "config.yaml").keys())
    own = CONFIG_DIR / f"{config_name}.yaml"
    if own.is_file():
        keys |= set(OmegaConf.load(own).keys())
    keys |= {p.name for p in CONFIG_DIR.iterdir() if p.is_dir()}
    for path in CONFIG_DIR.rglob("*.yaml"):
        if any("@package _global_" in line for line in path.read_text().splitlines()[:5]):
            keys |= set(OmegaConf.load(path).keys())
    return frozenset(keys - {"defaults", "hydra"})


def _leaf_paths(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaf_paths(value, f"{prefix}{key}.")
    elif prefix:
        yield prefix[:-1]


def check_top_level_keys(cfg: DictConfig, overrides: list[str], config_name: str = "config") -> None:
    """Refuse a top-level key added on the command line (``+lr=0.1``) that no config defines; suggests the key meant."""
    defined = defined_top_level_keys(config_name)
    unknown = sorted(str(k) for k in cfg.keys() if k != "hydra" and k not in defined)
    if not unknown:
        return
    key = unknown[0]
    given = next((o for o in overrides if o.lstrip("+~").split("=", 1)[0].split(".")[0] == key), f"+{key}=...")
    value = given.split("=", 1)[1] if "=" in given else "..."
    leaves = [p for p in _leaf_paths(OmegaConf.to_container(cfg, resolve=False)) if p.split(".")[0] in
              defined and not p.split(".")[-1].startswith("_")]
    meant = [p for p in leaves if p.split(".")[-1] == key.split(".")[-1]] or difflib.get_close_matches(
        key, leaves, n=2, cutoff=0.6) or [p for p in leaves if difflib.get_close_matches(
            key, [p.split(".")[-1]], n=1, cutoff=0.75)]
    if meant:
        others = f" (or {', '.join(meant[1:3])})" if len(meant) > 1 else ""
        hint = f"did you mean {meant[0]}{others}? e.g. {meant[0]}={value} (without the +)."
    else:
        plain = ", ".join(sorted(k for k in defined if not (CONFIG_DIR / k).is_dir()))
        hint = f"drop it (the top-level keys are {plain}; everything else lives in a group such as model or trainer)."
    raise UserError(f"{given} adds the top-level key {key}, which gan_lab does not read; {hint}")


class PreflightChecks(Callback):
    """Hydra callback run before Hydra writes anything: refuses an undefined top-level key, an unsatisfiable SLURM
    request and an unwritable directory; locks the run or sweep directory (replacing a run needs ``overwrite=true``)
    and backs up the files Hydra rewrites (:class:`RunDirBackup`)."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config, "run", lambda run_dir: replaces_run(
            run_dir, config.get("ckpt_path"), config.get("overwrite", False)))
        RunDirBackup.take(Path(config.hydra.run.dir), config)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:  # the sweep's lock is held until the end
        self._check(config, "sweep", lambda sweep_dir: claim_sweep_dir(sweep_dir, config.get("overwrite", False)))

    @staticmethod
    def _check(config: DictConfig, kind: str, claim) -> None:
        # the default directory uses ${hydra:runtime.choices...}, which needs Hydra's config published
        HydraConfig.instance().set_config(config)
        key = f"hydra.{kind}.dir"
        try:
            check_top_level_keys(config, list(config.hydra.overrides.task), config.hydra.job.config_name)
            if kind == "sweep" and str(config.hydra.launcher.get("_target_")).endswith("gan_lab_slurm.SlurmLauncher"):
                slurm.check_request(config)
            check_writable(config.hydra[kind].dir, key)
            if secondary_process():  # process 0 of a multi-process run owns the directory
                return
            folder = Path(config.hydra[kind].dir)
            taken = RunDirLock.acquire(folder, key)
            try:
                claim(folder)
            except BaseException:
                if taken:
                    RunDirLock.release(folder, discard=True)
                raise
        except UserError as exc:
            print(f"gan_lab: error: {exc}", file=sys.stderr)
            sys.exit(2)


def check_writable(folder: str | Path, key: str) -> None:
    """Refuse a run or sweep directory that cannot be created or written, naming ``key`` to choose another."""
    problem = write_problem(folder)
    if problem is not None:
        raise UserError(f"the run directory {folder} cannot be written ({problem}); choose another with {key}=<path>.")


def check_paths(cfg: DictConfig) -> tuple[Path, dict | None]:
    """Check the run directory is writable and the resume checkpoint exists and is intact (every CRC);
    return the run directory and the checkpoint (tensors memory-mapped) or ``None``."""
    run_dir = Path(cfg.run_dir)
    check_writable(run_dir, "hydra.run.dir")
    if cfg.ckpt_path is None:
        return run_dir, None
    if not Path(cfg.ckpt_path).exists():
        raise UserError(f"ckpt_path={cfg.ckpt_path} does not exist; pass <run>/checkpoints/last.ckpt "
                        f"of an earlier run, or drop ckpt_path to start afresh.")
    return run_dir, read_checkpoint(cfg.ckpt_path, mmap=True)  # a run's checkpoint, intact (not a folder)


def check_training_length(trainer: L.Trainer, cfg: DictConfig, resume: dict | None,
                          epoch_batches: int | None = None) -> None:
    """Refuse a run that would train nothing, or a resume whose checkpoint already reached its limits.
    ``epoch_batches``: batches per epoch, against which a fractional ``limit_train_batches`` counts."""
    if trainer.max_epochs == 0:
        raise UserError("trainer.max_epochs=0 trains nothing; use trainer.max_epochs>=1 (or -1 with "
                        "trainer.max_batches or trainer.max_steps), e.g. trainer.max_epochs=25.")
    if trainer.max_steps == 0:
        raise UserError("trainer.max_steps=0 trains nothing; use trainer.max_steps=-1 (no limit) or a positive "
                        "number of optimiser steps (or trainer.max_batches for batches).")
    if trainer.limit_train_batches == 0:
        raise UserError(f"trainer.limit_train_batches={cfg.trainer.limit_train_batches} trains nothing; use null "
                        f"(every batch), a number of batches per epoch or a share of the epoch in (0, 1].")
    limit = trainer.limit_train_batches
    if isinstance(limit, float) and epoch_batches and int(limit * epoch_batches) < 1:
        raise UserError(f"trainer.limit_train_batches={limit} of the {epoch_batches} batches of an epoch is less "
                        f"than one batch; use at least {1 / epoch_batches:.2g}, or a number of batches "
                        f"(e.g. trainer.limit_train_batches=1).")
    if resume is None:
        return
    timer, spent = time_limit(trainer), trained_seconds(resume)
    if timer is not None and spent >= timer.time_remaining():
        raise UserError(f"the time limit trainer.max_time ({trainer_max_time(trainer)} of training) is already "
                        f"spent: the run of ckpt_path={cfg.ckpt_path} trained for {dhms(spent)}; raise "
                        f"trainer.max_time (it counts the time of every part of the run).")
    epochs, _ = epochs_completed(resume)
    batches = int((resume.get("gan_lab") or {}).get("batches_seen", 0))
    steps = int(resume.get("global_step", 0))
    for key, limit, done, trained in (
            ("max_epochs", trainer.max_epochs if (trainer.max_epochs or 0) > 0 else None, epochs,
             f"completed {epochs} epoch{'s' if epochs != 1 else ''}"),
            ("max_batches", cfg.trainer.get("max_batches"), batches, f"trained {batches} batches"),
            ("max_steps", trainer.max_steps if trainer.max_steps > 0 else None, steps,
             f"made {steps} optimiser steps")):
        if limit is not None and done >= limit:
            raise UserError(f"trainer.{key}={limit} is already reached: the run of ckpt_path={cfg.ckpt_path} "
                            f"{trained}; raise trainer.{key} to train further.")


def final_metrics(trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
    """The last value of every ``group/name`` metric: the module's training terms and Lightning-logged evaluations."""
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
               if "/" in k and torch.is_tensor(v) and v.numel() == 1}
    return {**getattr(pl_module, "logged", {}), **metrics}


class RunSummary(L.Callback):
    """Writes the training summary into ``path`` (``metrics.json``, other keys kept) from process 0 of the
    training processes (under ``ddp_spawn``, a worker); ``start``: ``time.time()`` at the start of training."""

    def __init__(self, path: str | Path, start: float) -> None:
        self.path, self.start = Path(path), start

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            update_metrics_json(self.path, {"status": "running", **slurm.job_record()})

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if stopped_by_time_limit(trainer):  # resumable, as an interruption (as LimitCheckpoint says)
            self.write(trainer, pl_module, "interrupted", reason="max_time")
        else:
            self.write(trainer, pl_module, "completed")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exc: BaseException) -> None:
        if isinstance(exc, TrainingDiverged):
            values = {k: v if math.isfinite(v) else str(v) for k, v in exc.values.items()}  # strict JSON
            self.write(trainer, pl_module, "diverged",
                       diverged={"batch": exc.step, "values": values, "message": str(exc)})
        elif isinstance(exc, (TrainingInterrupted, KeyboardInterrupt)):  # a second Ctrl-C: at once, no checkpoint
            self.write(trainer, pl_module, "interrupted", signal=getattr(exc, "signum", int(signal.SIGINT)))
        elif isinstance(exc, DiskFull):  # a failure during training, said where it could not write
            with contextlib.suppress(DiskFull):
                self.write(trainer, pl_module, "failed", error=str(exc))
        elif not isinstance(exc, UserError) or RunDirBackup.stage == "accepted":  # a refusal is not a run
            self.write(trainer, pl_module, "failed", error=f"{type(exc).__name__}: {exc}")

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, status: str, **extra) -> None:
        if not trainer.is_global_zero:
            return
        # completed epochs: an epoch that a limit or a signal cut short is not counted
        epochs = trainer.current_epoch - (1 if epoch_cut_short(trainer) is not None else 0)
        update_metrics_json(self.path, {  # keeps the callbacks' evaluations
            "status": status,
            "epochs": epochs,
            "batches_seen": pl_module.batches_seen,
            "images_seen": pl_module.images_seen,
            "optimizer_steps": trainer.global_step,
            "train_seconds": round(time.time() - self.start, 2),
            "final": final_metrics(trainer, pl_module),
            **slurm.job_record(),
            **extra,
        })
        print(f"gan_lab: run directory {self.path.parent.resolve()}")


def check_optimized_metric(name: str | None, callbacks: list, class_names) -> None:
    """Refuse a ``val/`` ``optimized_metric`` that none of the run's evaluations logs."""
    if name is None or not str(name).startswith("val/"):
        return
    evaluations = [cb.evaluator for cb in callbacks if isinstance(cb, MetricsCallback)]
    names = loggable_names(evaluations[0].metrics, class_names or ()) if evaluations else set()
    if name not in names:
        how = (f"use one of {', '.join(sorted(names))}" if names else
               "evaluations run with callbacks=with_metrics (their metrics: callbacks.metrics.evaluator.metrics)")
        raise UserError(f"optimized_metric={name} is not among what this run's evaluations log; {how}.")


class OptimizedMetricLogged(L.Callback):
    """Refuses, after the first batch, a non-``val/`` ``optimized_metric`` the run does not log."""

    def __init__(self, name: str | None) -> None:
        self.name, self.checked = name, name is None or str(name).startswith("val/")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.checked:
            return
        self.checked = True
        names = {f"train/{k}" for k in [*(outputs or {}), *pl_module.host_terms(), "batches_seen", "images_seen"]}
        names |= {f"lr/{key}" for key in ("discriminator", "generator")}
        if self.name not in names:
            raise UserError(f"optimized_metric={self.name} is not logged by this run; use one of "
                            f"{', '.join(sorted(names))} or a val/ metric of callbacks=with_metrics.")


class RunAccepted(L.Callback):
    """At the first batch, accepts the run directory as the new run's (:meth:`RunDirBackup.accept`)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if RunDirBackup.stage == "checked":
            RunDirBackup.accept()


def train(cfg: DictConfig) -> float | None:
    """Build everything from ``cfg``, train, write ``metrics.json`` and return ``optimized_metric``'s value.

    All checks precede any write to the run directory, locked throughout; a requeued SLURM job continues its run."""
    primary = not secondary_process()
    with keep_run_dir_until_accepted(Path(cfg.run_dir) if primary else None):
        return _train(cfg, primary)


def _train(cfg: DictConfig, primary: bool) -> float | None:
    """:func:`train`'s work; ``primary``: this process owns the run directory (not a DDP rank > 0)."""
    check_value(cfg.seed, AnyInt, "seed", 0)
    overwrite = check_value(cfg.get("overwrite", False), bool, "overwrite")
    if HydraConfig.initialized():  # (a multirun's jobs; a single run was checked by Hydra's callback)
        check_top_level_keys(cfg, list(HydraConfig.get().overrides.task))
    name = cfg.get("optimized_metric")
    done = slurm.completed_run(Path(cfg.run_dir))
    if done is not None:
        log.info("SLURM job %s was requeued after its run completed: nothing to do", slurm.job_id())
        return (done.get("final") or {}).get(name)
    continued = slurm.checkpoint_to_continue(Path(cfg.run_dir)) if cfg.ckpt_path is None else None
    ckpt = continued or cfg.ckpt_path
    if ckpt is not None:
        cfg.ckpt_path = str(cut_checkpoint(Path(ckpt)))
    try:
        run_dir, resume = check_paths(cfg)
    except UserError as exc:
        if continued is None:
            raise
        exc = UserError(f"SLURM job {slurm.job_id()} was requeued but cannot continue its run: {exc}")
        update_metrics_json(Path(cfg.run_dir) / "metrics.json",  # the run says so too
                            {"status": "failed", "error": str(exc), **slurm.job_record()})
        raise exc from None
    replace = primary and replaces_run(run_dir, cfg.ckpt_path, overwrite, refuse=False)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg, setup=False)  # the data's facts (classes), nothing decoded
    model = build_model(cfg)
    if resume is not None:
        check_nets(model, resume["state_dict"], source=f"ckpt_path={cfg.ckpt_path}")
        check_resumed_optimizers(resume, model, source=f"ckpt_path={cfg.ckpt_path}")
    serve_draws(model, datamodule)
    setup_datamodule(cfg, datamodule)
    loggers = build_loggers(cfg)
    summary = RunSummary(run_dir / "metrics.json", start=time.time())
    callbacks = build_callbacks(cfg)
    check_optimized_metric(name, callbacks, cfg.data.get("class_names"))
    trainer = build_trainer(cfg, [*callbacks, History(), OptimizerClasses(), summary, RunAccepted(),
                                  OptimizedMetricLogged(name)], loggers)
    check_training_length(trainer, cfg, resume, batches_per_epoch(datamodule, trainer.world_size))
    check_batch_size(model, datamodule, trainer.world_size, trainer.limit_train_batches)
    if resume is not None:
        check_resumed_position(resume, datamodule)
        if not exact_resume(cfg):
            log.warning("callbacks.rng_state and callbacks.epoch_position are off: the continued run draws other "
                        "noise and images than the uninterrupted run would have.")
    del resume  # mapped tensors: Lightning reads the checkpoint itself
    # every check before training has passed; the run is accepted when its first batch starts
    RunDirBackup.hold(run_dir if primary else None, replace)
    if primary and cfg.ckpt_path is None:
        slurm.clear_history_of_a_restart(run_dir)  # kept by RunDirBackup until the first batch
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    log.info("run directory: %s", run_dir.resolve())
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    # what process 0 of the training processes wrote (under ddp_spawn they are not this process)
    written = read_metrics_json(summary.path)
    if trainer.is_global_zero:  # under ddp_spawn the counters are the workers' (a no-op otherwise)
        model.batches_seen = written.get("batches_seen", model.batches_seen)
        model.images_seen = written.get("images_seen", model.images_seen)
    metrics = written.get("final") or final_metrics(trainer, model)
    if name is None:
        return None
    if name not in metrics:
        raise UserError(f"optimized_metric={name} was not logged by this run; use one of "
                        f"{', '.join(sorted(metrics)) or 'the logged metrics'}.")
    return metrics[name]


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        value = train(cfg)
    except TrainingInterrupted as exc:
        print(f"gan_lab: {exc}", file=sys.stderr)
        if exc.signum == signal.SIGUSR2:  # SLURM's warning ahead of a time limit or a pre-emption
            slurm.requeue()
        sys.exit(128 + exc.signum)  # the shell's convention for a signal (130 Ctrl-C, 143 SIGTERM)
    except Exception as exc:  # noqa: BLE001 - user errors become one line, bugs keep their trace
        if not report_user_error(exc):
            raise
        if not in_multirun():
            sys.exit(2)
        value = math.nan  # a sweep goes on with its next job
    if value is not None and math.isnan(value) and in_multirun():
        # a failed job's value: the worst for the sweeper's direction (+inf minimising, -inf maximising)
        return slurm.failed_value(OmegaConf.select(HydraConfig.get(), "sweeper.direction"))
    return value


if __name__ == "__main__":
    # the task function of gan_lab.run, not of __main__: a SLURM job unpickles it by its module's name
    from gan_lab.run import main as task

    task()
