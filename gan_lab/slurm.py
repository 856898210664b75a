"""Runs on a SLURM cluster: the Hydra launcher (``hydra/launcher=slurm``) and what a job does when the cluster stops it.

:class:`SlurmLauncher` submits one job per run and records failed ones; a job warned by ``SIGUSR2`` saves
``last.ckpt``, is requeued (:func:`requeue`) and continues its run (:func:`checkpoint_to_continue`).
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from omegaconf import DictConfig, OmegaConf

from gan_lab.compat import sbatch_script
from gan_lab.errors import UserError
from gan_lab.metrics.records import modify_metrics_json, read_metrics_json

log = logging.getLogger("gan_lab")


def job_id() -> str | None:
    """The SLURM job this process runs in (``<array>_<task>`` in a job array), or ``None``."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def restarts() -> int:
    """How many times SLURM has requeued this job (0 for its first start)."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0)


def requeued() -> bool:
    """Whether this process is a SLURM job that has been requeued (not its first start)."""
    return job_id() is not None and restarts() > 0


def requeue_limit() -> int:
    """How many requeues a job may ask for: ``hydra.launcher.max_num_timeout`` (0 without a submitit launcher)."""
    if not HydraConfig.initialized():
        return 0
    return int(OmegaConf.select(HydraConfig.get(), "launcher.max_num_timeout", default=0) or 0)


def requeue() -> bool:
    """Put this job back in SLURM's queue unless it was requeued ``requeue_limit()`` times already; returns
    whether it was. Only process 0 asks."""
    if job_id() is None or int(os.environ.get("SLURM_PROCID") or 0) != 0:
        return False
    limit = requeue_limit()
    if restarts() >= limit:
        print(f"gan_lab: job {job_id()} is not requeued: it was requeued {restarts()} times, the limit "
              f"hydra.launcher.max_num_timeout={limit}; raise it, or continue by hand with ckpt_path.",
              file=sys.stderr)
        return False
    done = subprocess.run(["scontrol", "requeue", job_id()], capture_output=True, text=True)
    if done.returncode != 0:
        print(f"gan_lab: job {job_id()} could not be requeued ({done.stderr.strip()}); continue it with "
              f"ckpt_path.", file=sys.stderr)
        return False
    print(f"gan_lab: job {job_id()} requeued ({restarts() + 1} of {limit}); it continues from its checkpoint.",
          file=sys.stderr)
    return True


def checkpoint_to_continue(run_dir: Path) -> Path | None:
    """For a requeued job, the checkpoint its run continues from (``<run>/checkpoints/last.ckpt``);
    ``None`` outside SLURM, for a first start, or when none was written."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if not (requeued() and last.is_file()):
        return None
    log.info("SLURM job %s, start %d: continuing the run from %s", job_id(), restarts() + 1, last)
    return last


def clear_history_of_a_restart(run_dir: Path) -> None:
    """Delete the ``metrics.csv`` of a requeued job whose first part wrote no checkpoint (its run starts again)."""
    history = run_dir / "metrics.csv"
    if requeued() and history.is_file() and not (run_dir / "checkpoints" / "last.ckpt").is_file():
        log.warning("SLURM job %s, start %d: no checkpoint was written before the requeue; the run starts "
                    "again and its history %s is cleared", job_id(), restarts() + 1, history)
        history.unlink()


def completed_run(run_dir: Path) -> dict | None:
    """For a requeued job whose run already completed, its ``metrics.json``: nothing is left to do."""
    if not requeued():
        return None
    summary = read_metrics_json(run_dir / "metrics.json")
    return summary if summary.get("status") == "completed" else None


def job_record() -> dict[str, Any]:
    """What ``metrics.json`` says of the SLURM job (empty outside SLURM)."""
    return {"slurm": {"job_id": job_id(), "requeues": restarts()}} if job_id() is not None else {}


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """Hydra's submitit SLURM launcher, with a sweep that outlives its failed jobs."""

    def __call__(self, sweep_overrides: list[str], job_dir_key: str, job_num: int, job_id: str,
                 singleton_state: dict) -> JobReturn:
        import submitit

        if submitit.JobEnvironment().global_rank > 0:  # a DDP task beside process 0: one .hydra/ per run
            sweep_overrides = [*sweep_overrides, "hydra.output_subdir=null"]
        return super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        assert self.config is not None and self.hydra_context is not None
        params = dict(self.params)
        folder = params.pop("submitit_folder")
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=params.pop("max_num_timeout"))
        executor.update_parameters(**sbatch_parameters(params))

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        numbers = [initial_job_idx + i for i in range(len(job_overrides))]
        for idx, overrides in zip(numbers, job_overrides):
            log.info("\t#%d : %s", idx, " ".join(overrides))
        arguments = [(list(o), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state())
                     for idx, o in zip(numbers, job_overrides)]
        try:
            jobs = executor.map_array(self, *zip(*arguments))
        except (subprocess.CalledProcessError, submitit.core.utils.FailedJobError) as exc:
            print(f"gan_lab: error: SLURM refused the jobs ({one_line(str(exc))}); check the "
                  f"hydra.launcher keys.", file=sys.stderr)
            sys.exit(2)
        log.info("submitted SLURM jobs %s; follow them with squeue, their logs in %s", ", ".join(j.job_id for j in jobs),
                 Path(folder).parent)
        states = wait_until_ended(jobs)
        return [self.result(job, states[job.job_id], idx, list(o)) for job, idx, o in zip(jobs, numbers, job_overrides)]

    def result(self, job: Any, state: str, idx: int, overrides: list[str]) -> JobReturn:
        """The job's return; a failed job (an error, killed, cancelled) is logged with its logs' paths,
        recorded in its run's ``metrics.json`` and returns the worst value for the sweeper."""
        try:
            ret = job.results()[0]
            ret.return_value  # noqa: B018 - raises the job's error
            return ret
        except Exception as exc:  # noqa: BLE001 - a job's failure is the job's, not the sweep's
            error = exc
        logs = f"{job.paths.stdout} and {job.paths.stderr}"
        run_dir = self.run_dir(idx, overrides)
        log.error("job #%d (SLURM %s, %s) failed (%s); its logs: %s", idx, job.job_id, " ".join(overrides),
                  state, logs)
        self.record_failure(run_dir, job.job_id, state, logs, error)
        ret = JobReturn(overrides=overrides, working_dir=str(run_dir), task_name=str(self.config.hydra.job.name),
                        status=JobStatus.COMPLETED)
        ret.return_value = failed_value(OmegaConf.select(self.config, "hydra.sweeper.direction"))
        return ret

    def run_dir(self, idx: int, overrides: list[str]) -> Path:
        assert self.hydra_context is not None and self.config is not None
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with_num = OmegaConf.merge(cfg, {"hydra": {"job": {"num": idx}}})
        return Path(str(with_num.hydra.sweep.dir)) / str(with_num.hydra.sweep.subdir)

    @staticmethod
    def record_failure(run_dir: Path, job: str, state: str, logs: str, exc: BaseException) -> None:
        if not run_dir.is_dir():
            return

        def change(data: dict) -> dict:
            slurm = {**(data.get("slurm") or {}), "job_id": job, "state": state, "logs": logs}
            if data.get("status") in (None, "running"):  # killed before it could say how it ended
                data["status"] = "failed"
            if data["status"] == "failed" and "error" not in data:
                data["error"] = f"SLURM job {job} ended {state}: {one_line(str(exc), 500)}"
            return {**data, "slurm": slurm}

        modify_metrics_json(run_dir / "metrics.json", change)


def one_line(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]


#: the states of a job that has not ended (a requeued job passes through them again)
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "COMPLETING", "CONFIGURING",
          "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"}


def wait_until_ended(jobs: Sequence[Any], poll_s: float = 2.0) -> dict[str, str]:
    """Wait until every job has ended for good per ``squeue`` (a requeued job is pending again); returns each
    job's final state (from accounting once the controller forgot the job)."""
    ended: dict[str, str] = {}
    while len(ended) < len(jobs):
        ids = [j.job_id for j in jobs if j.job_id not in ended]
        listed = subprocess.run(["squeue", "-h", "-r", "--states=all", "-o", "%i %T", "-j", ",".join(ids)],
                                capture_output=True, text=True)
        states = dict(line.split() for line in listed.stdout.splitlines() if len(line.split()) == 2)
        for job in jobs:
            if job.job_id in ended:
                continue
            state = states.get(job.job_id)
            if state is None and job.done():  # forgotten by the controller: accounting knows
                ended[job.job_id] = str(job.get_info().get("State") or "UNKNOWN")
            elif state is not None and state not in ACTIVE:
                ended[job.job_id] = state
        if len(ended) < len(jobs):
            time.sleep(poll_s)
    return ended


def check_request(config: DictConfig) -> None:
    """Refuse a SLURM sweep (``config`` with its ``hydra`` node) unless ``sbatch`` exists, a cluster answers, the
    partition exists, the trainer uses the jobs' tasks and nodes, and ``sbatch --test-only`` accepts the script."""
    launcher = {k: OmegaConf.select(config, f"hydra.launcher.{k}") for k in config.hydra.launcher
                if k not in ("_target_", "submitit_folder", "max_num_timeout")}
    parameters = sbatch_parameters(OmegaConf.to_container(OmegaConf.create(launcher)))
    check_warning_time(parameters.get("time"), parameters.get("signal_delay_s"))
    if shutil.which("sbatch") is None:
        raise UserError("hydra/launcher=slurm needs SLURM's sbatch, which is not on this machine's PATH; run "
                        "on a cluster's login node, or try it locally with scripts/local_slurm.sh up.")
    found = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=60)
    if found.returncode != 0:
        raise UserError(f"no SLURM cluster answers ({one_line(found.stderr)}); check that this machine is a "
                        f"cluster node (SLURM_CONF, the controller's state: scontrol ping).")
    partitions = sorted(set(found.stdout.split()))
    if parameters.get("partition") is not None and parameters["partition"] not in partitions:
        raise UserError(f"hydra.launcher.partition={parameters['partition']} is not a partition of this cluster; "
                        f"use one of {', '.join(partitions)} (sinfo lists them).")
    trainer = config.trainer
    tasks, nodes = int(parameters.get("ntasks_per_node") or 1), int(parameters.get("nodes") or 1)
    if int(trainer.get("num_nodes") or 1) != nodes:
        raise UserError(f"hydra.launcher.nodes={nodes} but trainer.num_nodes={trainer.get('num_nodes')}; "
                        f"set both to the same number of nodes.")
    devices = trainer.get("devices")
    if tasks > 1 and devices not in (tasks, -1, "auto"):
        raise UserError(f"hydra.launcher.tasks_per_node={tasks} starts {tasks} processes a node, one per device, "
                        f"but trainer.devices={devices}; set trainer.devices={tasks} (with trainer=ddp or "
                        f"trainer=ddp_cpu).")
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "check.sh"
        script.write_text(sbatch_script(tmp, parameters))
        done = subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True, text=True)
    if done.returncode != 0:
        reason = one_line(done.stderr.replace("sbatch: error: ", ""))
        raise UserError(f"SLURM cannot run these jobs: {reason}; change the hydra.launcher keys (partition, nodes, "
                        f"tasks_per_node, cpus_per_task, gpus_per_node, mem_gb, timeout_min).")


#: the least time a job needs before its time-limit warning: SLURM may send the warning up to 60 s
#: early (sbatch's --signal), and the job must have started training by then
MIN_WORK_S = 120


def check_warning_time(timeout_min: Any, signal_delay_s: Any) -> None:
    """Refuse a time limit that leaves a job less than :data:`MIN_WORK_S` before its SIGUSR2 warning."""
    if timeout_min is None or signal_delay_s is None:
        return
    left = int(timeout_min) * 60 - int(signal_delay_s)
    if left < MIN_WORK_S:
        raise UserError(f"hydra.launcher.timeout_min={timeout_min} with hydra.launcher.signal_delay_s={signal_delay_s} "
                        f"warns a job {left} s after it starts, and SLURM may warn up to 60 s earlier, while the job is "
                        f"still starting; leave at least {MIN_WORK_S} s between them (raise timeout_min or lower "
                        f"signal_delay_s).")


def sbatch_parameters(launcher: dict[str, Any]) -> dict[str, Any]:
    """The ``hydra.launcher`` keys (submitit's generic names and the SLURM ones) as the parameters
    of ``submitit.SlurmExecutor`` (sbatch's names)."""
    rename = {"timeout_min": "time", "tasks_per_node": "ntasks_per_node", "name": "job_name"}
    out = {rename.get(k, k): v for k, v in launcher.items() if k != "mem_gb"}
    if launcher.get("mem_gb") is not None:
        out["mem"] = f"{launcher['mem_gb']}GB"
    return out


def failed_value(direction: Any) -> float:
    """A failed job's value for the sweeper: the worst for ``direction`` (+inf minimising, -inf maximising)."""
    return -float("inf") if "max" in str(direction).lower() else float("inf")
