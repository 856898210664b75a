"""gan_lab on a real SLURM cluster: sweeps, DDP across tasks, time limits, pre-emption, cancellation.

These tests need a cluster (``make test-slurm`` starts a one-node one with scripts/local_slurm.sh);
they fail, not skip, without one.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import lightning as L

from gan_lab.checkpoint_io import read_checkpoint
from tests.conftest import ROOT, TINY, run_cli

pytestmark = pytest.mark.slurm

#: a job of the local cluster: one CPU, no GPU, 1 GB
LOCAL = ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=null", "hydra.launcher.tasks_per_node=1",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10"]
QUIET = ["callbacks.progress_bar=null", "trainer.enable_progress_bar=false"]


def slurm(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=True, timeout=60).stdout


def job_info(job: str) -> dict[str, str]:
    fields = slurm("scontrol", "show", "job", "-o", job).split()
    return dict(f.split("=", 1) for f in fields if "=" in f)


def wait_for(condition, timeout: float, what: str, step: float = 0.5, sweep_dir: Path | None = None):
    """``condition()``'s first true value within ``timeout`` s; on timeout the failure shows the queue
    and the end of the jobs' logs under ``sweep_dir``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    logs = "".join(f"\n{p}:\n{p.read_text()[-1500:]}" for p in (sorted(sweep_dir.rglob("*_log.*")) if sweep_dir else []))
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; the queue:\n"
                         f"{slurm('squeue', '-h', '--states=all')}{logs}")


def wait_for_job_end(job: str, restarts: int, timeout: float = 300) -> dict[str, str]:
    """The job's record once its start number ``restarts`` has ended."""
    return wait_for(lambda: (lambda i: i if int(i["Restarts"]) >= restarts and i["JobState"] in (
        "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") else None)(job_info(job)), timeout, f"job {job} to end")


@pytest.fixture(scope="module", autouse=True)
def cluster():
    if shutil.which("sinfo") is None or subprocess.run(["sinfo"], capture_output=True).returncode != 0:
        pytest.fail("no SLURM cluster answers: start the local one with `scripts/local_slurm.sh up` and "
                    "export SLURM_CONF (make test-slurm does both)")


def sweep(sweep_dir: Path, *overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return run_cli("-m", *LOCAL, *overrides, f"hydra.sweep.dir={sweep_dir}", timeout=timeout)


def start_sweep(sweep_dir: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gan_lab.run", "-m", *LOCAL, *overrides,
                             f"hydra.sweep.dir={sweep_dir}"], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def history_rows(run_dir: Path) -> int:
    path = run_dir / "metrics.csv"
    return path.read_text().count("\n") - 1 if path.is_file() else 0


def submitted_job(run_dir: Path) -> str:
    return wait_for(lambda: (summary(run_dir).get("slurm") or {}).get("job_id")
                    if (run_dir / "metrics.json").is_file() else None, 120, "the job to start training",
                    sweep_dir=run_dir.parent)


def assert_same_training(a: Path, b: Path) -> None:
    """Two runs ended with the same weights, optimiser states and history, bit for bit."""
    first = torch.load(a / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    second = torch.load(b / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert first["state_dict"].keys() == second["state_dict"].keys()
    assert all(torch.equal(first["state_dict"][k], second["state_dict"][k]) for k in first["state_dict"])
    for x, y in zip(first["optimizer_states"], second["optimizer_states"], strict=True):
        for p in x["state"]:
            assert all(torch.equal(x["state"][p][k], y["state"][p][k]) for k in x["state"][p] if torch.is_tensor(x["state"][p][k]))
    assert (a / "metrics.csv").read_bytes() == (b / "metrics.csv").read_bytes()


class KillIfSeed(L.Callback):
    """Kills its own process with SIGKILL (as the kernel's out-of-memory killer would) when the run's
    seed is ``seed``."""

    def __init__(self, run_seed: int, seed: int) -> None:
        self.kill = run_seed == seed

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.kill:
            os.kill(os.getpid(), signal.SIGKILL)


class SaveWeights(L.Callback):
    """Saves each process's weights at the end of training as ``<dirpath>/rank<k>.pt`` (parameters: the
    batch-norm running statistics are each process's own, as DDP keeps them)."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_train_end(self, trainer, pl_module) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        torch.save({k: p.detach() for k, p in pl_module.named_parameters()},
                   self.dirpath / f"rank{trainer.global_rank}.pt")


def test_a_sweep_queues_its_jobs_and_reports_a_failed_one_without_stopping(tmp_path):
    """Three runs that need the whole node each: they wait in the queue for one another; the run
    killed by the kernel is reported as failed with its logs, the others complete. A job requeued
    after its run completed does nothing."""
    out = tmp_path / "sweep"
    res = sweep(out, *TINY, "hydra.launcher.cpus_per_task=2", "seed=1,2,3",
                "+callbacks.fault._target_=tests.test_slurm.KillIfSeed", "+callbacks.fault.run_seed=${seed}",
                "+callbacks.fault.seed=2")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stdout + res.stderr
    assert [summary(out / str(i))["status"] for i in range(3)] == ["completed", "failed", "completed"]
    failed = summary(out / "1")
    assert failed["slurm"]["state"] == "FAILED" and Path(failed["slurm"]["logs"].split(" and ")[0]).is_file()
    assert "failed (FAILED); its logs:" in res.stdout + res.stderr
    jobs = [summary(out / str(i))["slurm"]["job_id"] for i in (0, 2)]
    starts = [job_info(j)["StartTime"] for j in jobs]
    ends = [job_info(j)["EndTime"] for j in jobs]
    assert ends[0] <= starts[1] or ends[1] <= starts[0]  # one after the other: the node holds one
    report = run_cli(str(out), module="gan_lab.report")
    assert report.returncode == 0, report.stderr[-2000:]
    assert "2 completed, 1 failed" in report.stdout
    assert f"`1`: failed (SLURM job {failed['slurm']['job_id']} ended FAILED" in report.stdout
    assert failed["slurm"]["logs"] in report.stdout

    # a job requeued after its run completed does nothing
    run, job = out / "0", jobs[0]
    before = {p: p.read_bytes() for p in (run / "metrics.csv", run / "metrics.json", run / "checkpoints" / "last.ckpt")}
    slurm("scontrol", "requeue", job)
    assert wait_for_job_end(job, 1)["JobState"] == "COMPLETED"
    assert all(p.read_bytes() == data for p, data in before.items())
    assert "requeued after its run completed: nothing to do" in (run / "run.log").read_text()


def test_ddp_across_slurm_tasks_equals_the_ddp_cpu_run(tmp_path):
    """One run of 2 processes started by SLURM (ranks from SLURM's variables) ends with the same weights
    in both processes, equal bit for bit to the same run with trainer=ddp_cpu's own processes."""
    common = [*TINY, "trainer=ddp_cpu", "seed=5"]
    out = tmp_path / "sweep"
    res = sweep(out, *common, "hydra.launcher.tasks_per_node=2", "+callbacks.weights._target_=tests.test_slurm.SaveWeights",
                f"+callbacks.weights.dirpath={tmp_path / 'weights'}")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-3000:]
    run = out / "0"
    assert summary(run)["status"] == "completed"
    logs = " ".join(p.read_text() for p in (out / ".submitit").rglob("*_log.*"))
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in logs and "global_rank=1(2)" in logs
    ranks = [torch.load(tmp_path / "weights" / f"rank{k}.pt") for k in (0, 1)]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])

    twin = tmp_path / "twin"
    res = run_cli(*common, f"hydra.run.dir={twin}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert_same_training(twin, run)


#: a run of about 3 minutes of training on 2 cores: longer than its first time slice (SLURM warns a
#: 3-minute job 60 s before its limit, and up to 60 s earlier) and the short pre-empted second one
LONG = ["experiment=digits", "trainer.max_epochs=120", "seed=3", "callbacks.sample_grid.every_n_epochs=20", *QUIET]


def test_a_time_limit_and_a_preemption_are_survived_bit_identical(tmp_path):
    """A job whose time limit is shorter than its training, pre-empted once by ``scontrol requeue``
    mid-epoch: it is requeued each time, continues its run in its one run directory, and ends with
    the weights, optimiser states and history of the uninterrupted run."""
    out = tmp_path / "sweep"
    proc = start_sweep(out, *LONG, "hydra.launcher.timeout_min=3", "hydra.launcher.signal_delay_s=60")
    run = out / "0"
    try:
        job = submitted_job(run)
        wait_for(lambda: (summary(run).get("slurm") or {}).get("requeues") == 1 and history_rows(run) > 10,
                 240, "the job's second part to train", sweep_dir=out)
        time.sleep(2)
        slurm("scontrol", "requeue", job)  # pre-empted: SIGTERM, then requeued by SLURM
        _, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    done = summary(run)
    assert done["status"] == "completed" and done["slurm"]["requeues"] >= 2
    logs = "".join(p.read_text() for p in (out / ".submitit").rglob("*_log.err"))
    assert logs.count("SIGUSR2 received: stopped after batch") >= 1  # time limits
    assert "SIGTERM received: stopped after batch" in logs  # the pre-emption
    assert (run / "run.log").read_text().count("continuing the run from") == done["slurm"]["requeues"]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["0", "multirun.yaml"]

    twin = tmp_path / "twin"
    res = run_cli(*LONG, f"hydra.run.dir={twin}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert_same_training(twin, run)



def test_a_cancelled_job_leaves_a_resumable_checkpoint_and_a_damaged_one_fails_clearly(tmp_path):
    """``scancel``: the run stops after its batch with last.ckpt and says so; requeued with that
    checkpoint damaged, the job says which file in its log and its run is marked failed."""
    out = tmp_path / "sweep"
    args = [*TINY, "trainer.max_epochs=200", "trainer.limit_train_batches=null", "data.batch_size=16"]
    proc = start_sweep(out, *args)
    run = out / "0"
    try:
        job = submitted_job(run)
        wait_for(lambda: history_rows(run) > 20, 120, "training to be under way")
        slurm("scancel", job)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err, err[-3000:]
    stopped = summary(run)
    assert stopped["status"] == "interrupted" and stopped["signal"] == signal.SIGTERM
    assert stopped["slurm"]["state"].startswith("CANCELLED")
    ckpt = run / "checkpoints" / "last.ckpt"
    state = read_checkpoint(ckpt)
    assert state["gan_lab"]["batches_seen"] == stopped["batches_seen"] > 0
    report = run_cli(str(out), module="gan_lab.report")
    assert f"`0`: interrupted (signal 15); SLURM job {job}; logs:" in report.stdout
    assert f"continue it with ckpt_path={ckpt}" in report.stdout

    # resumable: the same run continued by hand for one more epoch
    epochs = state["epoch"] + 2
    res = run_cli(*args, f"trainer.max_epochs={epochs}", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'more'}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert summary(tmp_path / "more")["status"] == "completed"

    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
    ckpt.write_bytes(bytes(data))
    restarts = int(job_info(job)["Restarts"])
    slurm("scontrol", "requeue", job)
    wait_for_job_end(job, restarts + 1, timeout=120)
    failed = summary(run)
    assert failed["status"] == "failed" and str(ckpt) in failed["error"]
    log = "".join(p.read_text() for p in (out / ".submitit").rglob("*_log.err"))
    said = log.strip().splitlines()[-1]
    assert said.startswith(f"gan_lab: error: SLURM job {job} was requeued but cannot continue its run")
    assert str(ckpt) in said and "Traceback" not in log


@pytest.mark.parametrize("override, named", [
    ("hydra.launcher.partition=nowhere", "hydra.launcher.partition=nowhere is not a partition"),
    ("hydra.launcher.cpus_per_task=64", "SLURM cannot run these jobs"),
    ("hydra.launcher.gpus_per_node=1", "SLURM cannot run these jobs"),
    ("trainer.num_nodes=2", "hydra.launcher.nodes=1 but trainer.num_nodes=2"),
])
def test_a_request_the_cluster_cannot_satisfy_is_one_sentence_before_anything_is_written(tmp_path, override, named):
    out = tmp_path / "sweep"
    extra = ["hydra.launcher.tasks_per_node=1"] if "gpus" in override else []
    res = sweep(out, *TINY, override, *extra, "seed=1,2")
    assert res.returncode == 2, res.stderr[-2000:]
    assert named in res.stderr and "Traceback" not in res.stderr
    assert len([line for line in res.stderr.splitlines() if line.startswith("gan_lab: error:")]) == 1
    assert not out.exists()
    assert slurm("squeue", "-h") == ""


def test_an_optuna_sweep_runs_its_trials_as_slurm_jobs(tmp_path):
    out = tmp_path / "sweep"
    res = sweep(out, *TINY, "hparams_search=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2",
                "optimized_metric=train/g_loss")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "submitted SLURM jobs" in res.stdout + res.stderr
    assert sorted(summary(out / str(i))["status"] for i in range(2)) == ["completed", "completed"]
    best = (out / "optimization_results.yaml").read_text()
    assert "best_value" in best and "inf" not in best


def test_the_sbatch_script_for_two_nodes_of_four_gpus():
    """What a 2-node x 4-GPU run asks SLURM for (it cannot run here): 4 tasks a node, one per GPU,
    8 processes in all, each told its rank by SLURM."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from gan_lab import CONFIG_DIR
    from gan_lab.compat import sbatch_script
    from gan_lab.slurm import sbatch_parameters

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.nodes=2", "hydra.launcher.gpus_per_node=4",
                                           "hydra.launcher.partition=gpu", "trainer=ddp", "trainer.num_nodes=2",
                                           "trainer.devices=4"], return_hydra_config=True)
    launcher = {k: OmegaConf.select(cfg, f"hydra.launcher.{k}") for k in cfg.hydra.launcher
                if not k.startswith("_") and k not in ("submitit_folder", "max_num_timeout", "name")}
    launcher = OmegaConf.to_container(OmegaConf.create(launcher))
    script = sbatch_script("/tmp/sweep/.submitit/%j", sbatch_parameters(launcher))
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --partition=gpu", "#SBATCH --signal=USR2@120", "#SBATCH --requeue",
                 "#SBATCH --time=1440", "#SBATCH --cpus-per-task=8"):
        assert line in script.splitlines(), script
    assert "srun" in script
    assert cfg.trainer.num_nodes * cfg.trainer.devices == 8
