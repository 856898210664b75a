"""A run directory belongs to one run: a second training into it at once, a new run over the run it
holds (unless ``overwrite=true``) and a sweep into a sweep directory that holds runs are refused in
one sentence; every refusal leaves every byte of the run; temporary files a killed writer left are
removed when the run continues; a resume with another optimiser and a full disk during a checkpoint
save are one sentence.

Most runs call ``gan_lab.run.main`` as the command line does (``sys.argv``, Hydra and its callbacks
included), in this process; a second training at once needs a process of its own.
"""
from __future__ import annotations

import csv
import errno
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from gan_lab import run as gan_run
from gan_lab.checkpoint_io import AtomicCheckpointIO
from gan_lab.fs import HOST_TAG
from tests.conftest import ROOT, TINY, one_error_line, refused, run_main

#: a tiny run: 2 epochs of 3 batches of narrow DCGAN nets on the bundled digits
SMALL = [*TINY, "model.generator.width=8", "model.discriminator.width=8"]


@pytest.fixture(autouse=True)
def _keep_hydra_and_logging():
    """Hydra configures the root logger and publishes its config in this process: put both back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:], root.level = handlers, level
    HydraConfig.instance().cfg = None
    GlobalHydra.instance().clear()


def main(*args: str, capsys) -> subprocess.CompletedProcess:
    """``python -m gan_lab.run <SMALL> <args>`` in this process (``-m`` among ``args``: a multirun)."""
    return run_main("gan_lab.run", *(["-m"] if "-m" in args else []), *SMALL, *(a for a in args if a != "-m"),
                    capsys=capsys)


def every_byte(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` (hidden ones included), with a hash of each file's bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def steps(run: Path) -> list[int]:
    """The ``step`` of every row of training values in ``metrics.csv``."""
    with open(run / "metrics.csv") as fh:
        return [int(row["step"]) for row in csv.DictReader(fh) if row.get("train/g_loss")]


@pytest.fixture(scope="module")
def cut_run(tmp_path_factory) -> Path:
    """A run stopped inside its first epoch (trainer.max_batches=2 of 3 batches), through the command line."""
    path = tmp_path_factory.mktemp("cut") / "run"
    sys.argv, argv = ["gan_lab.run", *SMALL, "trainer.max_batches=2", f"hydra.run.dir={path}"], sys.argv
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        GlobalHydra.instance().clear()
        gan_run.main()
    finally:
        sys.argv = argv
        root.handlers[:], root.level = handlers, level
        HydraConfig.instance().cfg = None
    assert (path / "checkpoints" / "last.ckpt").is_file() and (path / ".run.lock").is_file()
    return path


@pytest.fixture
def run_copy(cut_run, tmp_path) -> Path:
    path = tmp_path / "run"
    shutil.copytree(cut_run, path)
    return path


def test_a_second_training_into_a_run_directory_in_use_is_refused(tmp_path, capsys):
    """A training holds its run directory: a second one into it exits 2 naming the directory and the
    first one's process, before Hydra rewrites the first one's .hydra/; the first goes on."""
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "gan_lab.run", *SMALL, "trainer.max_epochs=1000",
                              f"hydra.run.dir={run}"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not (run / ".hydra" / "overrides.yaml").is_file() and time.time() < deadline and first.poll() is None:
            time.sleep(0.05)
        time.sleep(0.2)  # Hydra has written the first run's .hydra/
        config = {p.name: p.read_bytes() for p in (run / ".hydra").iterdir()}
        res = main("seed=1", f"hydra.run.dir={run}", capsys=capsys)
        one_error_line(res, f"run directory {run} ", f"process {first.pid} ")
        assert {p.name: p.read_bytes() for p in (run / ".hydra").iterdir()} == config
        assert first.poll() is None, first.stderr.read().decode()[-3000:]
    finally:
        first.kill()
        first.communicate(timeout=60)


def test_a_new_run_over_an_existing_run_is_refused_unless_overwrite(run_copy, capsys):
    run = run_copy
    (run / "evaluation").mkdir()
    (run / "evaluation" / "old.json").write_text("{}")  # what gan_lab.evaluate left of the old run
    before = every_byte(run)
    res = main(f"hydra.run.dir={run}", capsys=capsys)
    one_error_line(res, f"the run directory {run} already holds a run", "overwrite=true")
    assert every_byte(run) == before
    res = main("overwrite=maybe", f"hydra.run.dir={run}", capsys=capsys)
    one_error_line(res, "overwrite='maybe' must be true or false")
    ckpt = run / "checkpoints" / "last.ckpt"
    res = main("overwrite=true", f"ckpt_path={ckpt}", f"hydra.run.dir={run}", capsys=capsys)
    one_error_line(res, "overwrite=true would delete the run", f"ckpt_path={ckpt}")
    assert every_byte(run) == before
    old_log = (run / "run.log").read_text()

    res = main("overwrite=true", "seed=3", f"hydra.run.dir={run}", capsys=capsys)
    assert res.returncode == 0, res.stderr[-3000:]
    assert not (run / "evaluation").exists() and not list(run.glob(".replaced-run.*"))
    assert steps(run) == sorted(set(steps(run))) and len(steps(run)) == 6  # the new run's history only
    assert old_log not in (run / "run.log").read_text()
    assert "seed=3" in (run / ".hydra" / "overrides.yaml").read_text()
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["gan_lab"]["batches_seen"] == 6


def test_a_requeued_slurm_job_starts_again_in_its_own_directory(tmp_path, monkeypatch, capsys):
    """A requeued job whose first start wrote no checkpoint starts its run again in its directory."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text('{"status": "running"}')  # killed before its first checkpoint
    res = main(f"hydra.run.dir={run}", capsys=capsys)
    one_error_line(res, f"the run directory {run} already holds a run")
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    stale = "step,train/d_loss\n0,0.5\n1,0.4\n"  # the first part's history: it left no checkpoint
    (run / "metrics.csv").write_text(stale)
    res = main(f"hydra.run.dir={run}", "data.batch_size=5000", capsys=capsys)  # refused by its checks
    one_error_line(res, "data.batch_size=5000")
    assert (run / "metrics.csv").read_text() == stale  # a refused start keeps it
    res = main(f"hydra.run.dir={run}", capsys=capsys)
    assert res.returncode == 0, res.stderr[-3000:]
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["epoch"] == 1
    assert "step,train/d_loss\n0,0.5" not in (run / "metrics.csv").read_text()  # the run's own history only
    assert "its history" in res.stderr + (run / "run.log").read_text()


#: refused resumes of a run stopped inside an epoch: (override, what the sentence names)
REFUSED_RESUMES = {
    "batch size": ("data.batch_size=32", ("64 images", "hold 32", "data.batch_size")),
    "seed": ("seed=9", ("seed 0", "1617", "seed 9")),
    "optimizer": ("optimizer=sgd", ("torch.optim.Adam", "discriminator", "torch.optim.SGD", "optimizer.discriminator")),
    "model": ("model=wgan", ("torch.optim.Adam", "discriminator", "torch.optim.RMSprop")),
    "refused as training starts": ("callbacks.fast_path.cuda_graph=true",
                                   ("callbacks.fast_path.cuda_graph=true", "GPU")),
}


@pytest.mark.parametrize("override,named", list(REFUSED_RESUMES.values()), ids=list(REFUSED_RESUMES))
def test_a_refused_resume_leaves_every_byte_of_the_run(run_copy, capsys, override, named):
    """Resumed into its own directory with an override it cannot continue with: one sentence, and every
    file of the run (its .hydra/, run.log, hparams.yaml, metrics, checkpoints, locks) as it was."""
    run = run_copy
    ckpt = run / "checkpoints" / "last.ckpt"
    before = every_byte(run)
    res = main("trainer.max_batches=4", f"ckpt_path={ckpt}", override, f"hydra.run.dir={run}", capsys=capsys)
    one_error_line(res, *named)
    assert every_byte(run) == before
    if override == "optimizer=sgd":  # the start of a fresh run that the sentence advises
        res = main(override, f"hydra.run.dir={run.parent / 'fresh'}", capsys=capsys)
        assert res.returncode == 0, res.stderr[-3000:]


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporary_files_a_killed_save_left_are_removed_when_the_run_continues(run_copy, capsys):
    run = run_copy
    folder = run / "checkpoints"
    killed = folder / f".last.ckpt.{HOST_TAG}-{dead_pid()}.k1ll3d00.tmp"  # a SIGKILL during a save
    killed.write_bytes(os.urandom(3 * 2**20))
    older = folder / ".epoch_0000.ckpt.0ld3r000.tmp"  # an older gan_lab's name, untouched for two days
    older.write_bytes(b"x" * 1000)
    os.utime(older, (time.time() - 2 * 86400,) * 2)
    writing = folder / f".last.ckpt.{HOST_TAG}-{os.getpid()}.wr1t1ng0.tmp"  # a live writer's (this process)
    writing.write_bytes(b"x")
    other = folder / "notes.tmp"
    other.write_bytes(b"x")
    res = main("trainer.max_batches=4", f"ckpt_path={folder / 'last.ckpt'}", f"hydra.run.dir={run}",
                     capsys=capsys)
    assert res.returncode == 0, res.stderr[-3000:]
    assert not killed.exists() and not older.exists()
    assert writing.exists() and other.exists()
    assert torch.load(folder / "last.ckpt", map_location="cpu", weights_only=False)["gan_lab"]["batches_seen"] == 4


def test_a_sweep_into_a_sweep_directory_with_runs_is_refused_unless_overwrite(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    fast = ["trainer.max_epochs=1", "trainer.limit_train_batches=1", "logger=none", "callbacks.sample_grid=null",
            "callbacks.training_curves=null", f"hydra.sweep.dir={sweep}"]
    res = main("-m", *fast, "seed=0,1", capsys=capsys)
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    before = every_byte(sweep)
    res = main("-m", *fast, "seed=2", capsys=capsys)
    one_error_line(res, f"hydra.sweep.dir={sweep} ", "(0, 1)", "overwrite=true")
    assert every_byte(sweep) == before
    res = main("-m", *fast, "seed=2", "overwrite=true", capsys=capsys)
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0"]  # the old sweep's runs are gone
    assert "seed=2" in (sweep / "0" / ".hydra" / "overrides.yaml").read_text()


# --- a full disk -------------------------------------------------------------------------------------

def test_a_full_disk_at_the_save_site_names_the_checkpoint_and_keeps_the_last(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)

    def full(obj, fh, *args, **kwargs):  # as torch.save reports it: a RuntimeError raised while handling it
        fh.write(b"half a checkpoint")
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", full)
    with refused(str(path), "No space left on device", f"ckpt_path={path}") as info:
        io.save_checkpoint({"step": 2}, path)
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


class FillDisk(L.Callback):
    """Fills the file system of the run directory as the second epoch ends, before its checkpoint."""

    def __init__(self, filler: str) -> None:
        self.filler = Path(filler)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:
            free = os.statvfs(self.filler.parent).f_bavail * os.statvfs(self.filler.parent).f_frsize
            with open(self.filler, "wb") as fh:
                fh.write(b"\0" * max(0, free - 64 * 1024))


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB file system (tmpfs): needs the right to mount, which root has."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4M", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or done.returncode})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_during_a_checkpoint_save_is_one_sentence_and_keeps_last_ckpt(small_disk, capsys):
    run = small_disk / "run"
    fill = ["+callbacks.fill._target_=tests.test_run_dir.FillDisk", f"+callbacks.fill.filler={small_disk / 'filler'}"]
    res = main(*fill, f"hydra.run.dir={run}", capsys=capsys)
    last = run / "checkpoints" / "last.ckpt"
    one_error_line(res, str(last), "No space left on device", f"ckpt_path={last}")
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 0  # the first epoch's, intact
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]  # no temporary file left
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "failed" and f"the disk holding {last} is full" in summary["error"]


def test_a_full_disk_during_evaluate_is_one_sentence_and_keeps_metrics_json(small_disk, capsys):
    run = small_disk / "run"
    assert main(f"hydra.run.dir={run}", capsys=capsys).returncode == 0
    before = (run / "metrics.json").read_bytes()
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    (small_disk / "filler").write_bytes(b"\0" * max(0, free - 16 * 1024))  # too little for the score histogram
    res = run_main("gan_lab.evaluate", f"run_dir={run}", "metrics=[scores]", "num_samples=24", capsys=capsys)
    one_error_line(res, "is full", "No space left on device", "free space there")
    assert (run / "metrics.json").read_bytes() == before
