"""Exact resume, interruption by signal and atomic checkpoint writes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Timer

from gan_lab.callbacks.resume import epochs_completed
from gan_lab.checkpoint_io import AtomicCheckpointIO
from gan_lab.errors import TrainingInterrupted, UserError
from gan_lab.run import train
from tests.conftest import ROOT, TINY, refused, run_cli

#: the unconditional model and both conditional ones (their sampled labels are part of the RNG stream);
#: wgan_gp: 5 critic updates each on its own draw of 16 real images (model.fresh_reals), so that a
#: mid-epoch resume must skip 5 draws per batch already trained on
MODELS = ["dcgan", "cdcgan", "cgan_mlp", "wgan_gp"]
NARROW = {"dcgan": ["model.generator.width=8", "model.discriminator.width=8"]}


class SignalAt(L.Callback):
    """Sends ``signum`` to this process during batch ``batch`` (1-based; 0: as training starts, before
    the first batch), as SLURM would."""

    def __init__(self, batch: int, signum: int = signal.SIGTERM) -> None:
        self.batch, self.signum = batch, signum

    def on_train_start(self, trainer, pl_module) -> None:
        if self.batch == 0:
            os.kill(os.getpid(), self.signum)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if pl_module.batches_seen + 1 == self.batch:
            os.kill(os.getpid(), self.signum)


def overrides(model: str, *extra: str) -> list[str]:
    # 2 epochs of 4 batches of 16 images at 16x16; dropout and a scheduler exercise every RNG/state
    return [f"model={model}", *NARROW.get(model, []), "data.image_size=16", "data.batch_size=16",
            "trainer.limit_train_batches=4", "scheduler=exponential", "callbacks.sample_grid=null",
            "callbacks.training_curves=null", "logger=none", *extra]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return state["state_dict"], state


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, f"tensors differ after resume: {diff[:5]}"


@pytest.mark.parametrize("model", MODELS)
def test_resume_equals_uninterrupted(model, make_cfg, tmp_path):
    """8 batches in one go == 4 + resume at the epoch boundary == 6 (SIGTERM mid-epoch) + resume."""
    full = tmp_path / "full"
    train(make_cfg(*overrides(model, "trainer.max_epochs=2"), run_dir=full))
    expected, full_state = weights(full)

    half = tmp_path / "half"
    train(make_cfg(*overrides(model, "trainer.max_epochs=1"), run_dir=half))
    resumed = tmp_path / "resumed"
    ckpt = half / "checkpoints" / "last.ckpt"
    train(make_cfg(*overrides(model, "trainer.max_epochs=2", f"ckpt_path={ckpt}"), run_dir=resumed))
    got, state = weights(resumed)
    assert_same(expected, got)
    draws = 5 if model == "wgan_gp" else 1
    assert state["gan_lab"] == full_state["gan_lab"] == {"batches_seen": 8, "images_seen": 128 * draws}
    assert [s["state"][0]["exp_avg"].sum() for s in state["optimizer_states"]] == \
        [s["state"][0]["exp_avg"].sum() for s in full_state["optimizer_states"]]

    # SIGTERM during batch 6 (2nd of epoch 1): stops after it, then resumed
    cut = tmp_path / "cut"
    kill = ["+callbacks.kill._target_=tests.test_resume.SignalAt", "+callbacks.kill.batch=6"]
    with refused("SIGTERM", "batch 6 (epoch 1)", error=TrainingInterrupted):
        train(make_cfg(*overrides(model, "trainer.max_epochs=2", *kill), run_dir=cut))
    summary = json.loads((cut / "metrics.json").read_text())
    assert summary["status"] == "interrupted" and summary["batches_seen"] == 6
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler was given back
    after_cut = tmp_path / "after_cut"
    train(make_cfg(*overrides(model, "trainer.max_epochs=2", f"ckpt_path={cut / 'checkpoints' / 'last.ckpt'}"),
                   run_dir=after_cut))
    got, state = weights(after_cut)
    assert_same(expected, got)
    assert state["gan_lab"]["batches_seen"] == 8
    assert json.loads((after_cut / "metrics.json").read_text())["status"] == "completed"


def test_a_resume_cuts_the_history_back_to_its_checkpoint(make_cfg, tmp_path):
    """The rows logged after the checkpoint a run resumes from (a SIGKILL after it, or a resume from an
    earlier checkpoint) and a row cut short by a kill are removed: the resumed history equals the
    uninterrupted one, with no step twice."""
    run = tmp_path / "run"
    args = overrides("dcgan", "trainer.max_epochs=2", "logger=csv", "callbacks.periodic_checkpoint.every_n_epochs=1")
    train(make_cfg(*args, run_dir=run))
    history = run / "metrics.csv"
    uninterrupted = history.read_bytes()
    with open(history, "a") as file:
        file.write("0.5,0,9,0.31")  # a row a kill cut short
    train(make_cfg(*args, f"ckpt_path={run / 'checkpoints' / 'epoch_0000.ckpt'}", run_dir=run))
    assert history.read_bytes() == uninterrupted


def test_a_resume_without_the_exact_resume_callbacks_says_it_is_not_exact(make_cfg, tmp_path, caplog):
    run, off = tmp_path / "run", ["callbacks.rng_state=null", "callbacks.epoch_position=null"]
    train(make_cfg(*overrides("dcgan", "trainer.max_epochs=1"), *off, run_dir=run))
    assert "not exact" not in caplog.text and "would have" not in caplog.text
    train(make_cfg(*overrides("dcgan", "trainer.max_epochs=2"), *off, f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
                   run_dir=run))
    assert all(s in caplog.text for s in ("callbacks.rng_state", "callbacks.epoch_position", "would have")), caplog.text


@pytest.mark.slow  # two subprocess runs; the in-process SIGTERM case runs in the default suite
def test_sigterm_subprocess_writes_resumable_checkpoint(tmp_path):
    """A real SIGTERM to a training process: exit 143, last.ckpt and metrics.json written, resumable."""
    run = tmp_path / "run"
    args = [*TINY, "model.generator.width=8", "model.discriminator.width=8", "data.image_size=16",
            "data.batch_size=16", "trainer.max_epochs=1000", "trainer.limit_train_batches=10",
            "callbacks.sample_grid=null", "callbacks.training_curves=null", f"hydra.run.dir={run}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "gan_lab.run", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (run / "checkpoints" / "last.ckpt").is_file() and time.time() < deadline \
                and proc.poll() is None:
            time.sleep(0.1)  # the first epoch's checkpoint: training is under way
        assert proc.poll() is None and (run / "checkpoints" / "last.ckpt").is_file(), \
            f"training was not under way within 120 s (exit status {proc.poll()})"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "SIGTERM received: stopped after batch" in err and "Traceback" not in err
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "interrupted"
    ckpt = run / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["gan_lab"]["batches_seen"] == summary["batches_seen"] > 0
    # resume to the end of the interrupted epoch
    epochs = state["epoch"] + 1
    from tests.conftest import run_cli

    res = run_cli(*args[:-1], f"trainer.max_epochs={epochs}", f"ckpt_path={ckpt}",
                  f"hydra.run.dir={tmp_path / 'resumed'}")
    assert res.returncode == 0, res.stderr[-3000:]
    resumed = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert resumed["status"] == "completed" and resumed["batches_seen"] == epochs * 10


def test_crash_mid_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)

    def crash(obj, fh, *args, **kwargs):
        fh.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        io.save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    state = torch.load(path, weights_only=True)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_trainer_uses_atomic_checkpoint_io(make_cfg):
    from gan_lab.build import build_trainer

    trainer = build_trainer(make_cfg(), [], [])
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_ctrl_c_writes_resumable_checkpoint(make_cfg, tmp_path):
    run = tmp_path / "run"
    kill = ["+callbacks.kill._target_=tests.test_resume.SignalAt", "+callbacks.kill.batch=2",
            f"+callbacks.kill.signum={int(signal.SIGINT)}"]
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, whatever ran before
    with refused("SIGINT", "batch 2 (epoch 0)", "ckpt_path=", "last.ckpt", error=TrainingInterrupted) as info:
        # with the sample grid and the curves of a run: they show where it stopped
        train(make_cfg(*[o for o in overrides("dcgan", *kill) if not o.endswith("=null")], run_dir=run))
    assert (run / "samples" / "final.png").is_file() and (run / "curves.png").is_file()
    assert info.value.signum == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler given back
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["gan_lab"]["batches_seen"] == 2
    assert epochs_completed(state) == (0, 2)  # mid-epoch: 2 batches into epoch 0


@pytest.mark.parametrize("change, images", [("data.batch_size=8", 8), ("model.fresh_reals=true", 32)])
def test_a_mid_epoch_resume_with_other_batches_is_refused(make_cfg, tmp_path, change, images):
    """Stopped 2 batches into an epoch of batches of 16 images: a resume whose batches hold another
    number of images (a new batch size, or two draws a batch) cannot continue that epoch exactly."""
    kill = ["+callbacks.kill._target_=tests.test_resume.SignalAt", "+callbacks.kill.batch=2"]
    with pytest.raises(TrainingInterrupted):
        train(make_cfg(*overrides("dcgan", "model.n_critic=2", *kill), run_dir=tmp_path / "cut"))
    ckpt = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    with refused("2 batches", "16 images", f"hold {images}", "data.batch_size", "model.fresh_reals"):
        train(make_cfg(*overrides("dcgan", "model.n_critic=2", change, f"ckpt_path={ckpt}"),
                       run_dir=tmp_path / "resumed"))
    # with the checkpoint's batches it resumes
    train(make_cfg(*overrides("dcgan", "model.n_critic=2", f"ckpt_path={ckpt}"), run_dir=tmp_path / "again"))
    assert json.loads((tmp_path / "again" / "metrics.json").read_text())["status"] == "completed"


@pytest.mark.parametrize("change, seed, images", [("seed=1", 1, 1617), ("data.subset=0.5", 0, 808)])
def test_a_mid_epoch_resume_with_another_order_is_refused(make_cfg, tmp_path, change, seed, images):
    """Stopped 2 batches into an epoch drawn with seed 0 over the 1,617 digits: a resume that draws the
    epoch's order otherwise (another seed, another subset of the data) would skip other images."""
    kill = ["+callbacks.kill._target_=tests.test_resume.SignalAt", "+callbacks.kill.batch=2"]
    with pytest.raises(TrainingInterrupted):
        train(make_cfg(*overrides("dcgan", *NARROW["dcgan"], "seed=0", *kill), run_dir=tmp_path / "cut"))
    ckpt = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    with refused("2 batches", "seed 0", "1617", f"seed {seed}", f"{images}"):
        train(make_cfg(*overrides("dcgan", *NARROW["dcgan"], change, f"ckpt_path={ckpt}"),
                       run_dir=tmp_path / "resumed"))


def test_sigterm_before_the_first_batch_is_served_after_it(make_cfg, tmp_path):
    """A SIGTERM that Lightning's own handler catches as training starts (before gan_lab's is in place)
    stops the run after the first batch with a resumable checkpoint, not with Lightning's bare exit."""
    run = tmp_path / "run"
    kill = ["+callbacks.kill._target_=tests.test_resume.SignalAt", "+callbacks.kill.batch=0"]
    with refused("SIGTERM", "batch 1 (epoch 0)", error=TrainingInterrupted) as info:
        train(make_cfg(*overrides("dcgan", *kill), run_dir=run))
    assert info.value.signum == signal.SIGTERM
    assert json.loads((run / "metrics.json").read_text())["status"] == "interrupted"
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert epochs_completed(state) == (0, 1) and state["gan_lab"]["batches_seen"] == 1


class DrawAtBatchEnd(L.Callback):
    """A callback with work at every batch end that the checkpoint must include: it draws from torch's
    global generator (as one that samples images at batch ends would)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        torch.rand(1)


def test_signal_checkpoint_includes_the_batch_end_work_of_later_listed_callbacks(make_cfg, tmp_path):
    """The interruption checkpoint is written after every callback's end-of-batch work, wherever the
    callback is listed: resuming it gives the weights of the uninterrupted run."""
    draw = ["+callbacks.draw._target_=tests.test_resume.DrawAtBatchEnd"]
    full = tmp_path / "full"
    train(make_cfg(*overrides("dcgan", "trainer.max_epochs=2", *draw), run_dir=full))
    cut = tmp_path / "cut"
    kill = ["+callbacks.kill._target_=tests.test_resume.SignalAt", "+callbacks.kill.batch=6"]
    with refused("batch 6 (epoch 1)", error=TrainingInterrupted):
        train(make_cfg(*overrides("dcgan", "trainer.max_epochs=2", *draw, *kill), run_dir=cut))
    resumed = tmp_path / "resumed"
    train(make_cfg(*overrides("dcgan", "trainer.max_epochs=2", *draw, f"ckpt_path={cut / 'checkpoints' / 'last.ckpt'}"),
                   run_dir=resumed))
    assert_same(weights(full)[0], weights(resumed)[0])


def test_signal_in_the_last_batch_of_an_epoch_is_served_after_the_next(make_cfg, tmp_path):
    """A signal during the last batch of an epoch waits for the epoch-end hooks and stops after the next
    batch, also in a part resumed mid-epoch (the position in the epoch is the resumed one)."""
    cut = tmp_path / "cut"
    kill = ["+callbacks.kill._target_=tests.test_resume.SignalAt"]
    with refused("batch 6 (epoch 1)", error=TrainingInterrupted):
        train(make_cfg(*overrides("dcgan", "trainer.max_epochs=3", *kill, "+callbacks.kill.batch=6"), run_dir=cut))
    again = tmp_path / "again"
    with refused("batch 9 (epoch 2)", error=TrainingInterrupted):
        train(make_cfg(*overrides("dcgan", "trainer.max_epochs=3", *kill, "+callbacks.kill.batch=8",
                                  f"ckpt_path={cut / 'checkpoints' / 'last.ckpt'}"), run_dir=again))
    state = torch.load(again / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert epochs_completed(state) == (2, 1) and state["gan_lab"]["batches_seen"] == 9


@pytest.mark.parametrize("stop_last", [False, True], ids=["stop_listed_first", "stop_listed_last"])
def test_signal_and_batch_limit_in_the_same_batch(make_cfg, tmp_path, stop_last):
    """SIGTERM during the batch that reaches trainer.max_batches (mid-epoch): the signal wins, whatever the
    order of the callbacks in the config: interrupted, 1 completed epoch, one mid-epoch last.ckpt."""
    run = tmp_path / "run"
    kill = ["+callbacks.kill._target_=tests.test_resume.SignalAt", "+callbacks.kill.batch=6"]
    late = ["callbacks.graceful_stop=null", "+callbacks.stop_late._target_=gan_lab.callbacks.GracefulStop",
            f"+callbacks.stop_late.dirpath={run / 'checkpoints'}"] if stop_last else []
    with refused("SIGTERM", "batch 6 (epoch 1)", error=TrainingInterrupted):
        train(make_cfg(*overrides("dcgan", "trainer.max_epochs=-1", "trainer.max_batches=6", *kill, *late),
                       run_dir=run))
    summary = json.loads((run / "metrics.json").read_text())
    assert (summary["status"], summary["epochs"], summary["batches_seen"]) == ("interrupted", 1, 6)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert epochs_completed(state) == (1, 2)


def test_max_steps_checkpoint_resumes_at_next_epoch(make_cfg, tmp_path):
    """max_steps cuts epoch 1 after one batch; Lightning closes that epoch, so no samples are skipped."""
    run = tmp_path / "run"
    train(make_cfg(*overrides("dcgan", "trainer.max_epochs=3", "trainer.max_steps=10"), run_dir=run))
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["gan_lab"]["batches_seen"] == 5
    assert epochs_completed(state) == (2, None)  # epoch 1 closed after its first batch


class BatchClock(Timer):
    """``trainer.max_time`` whose clock advances one second per trained batch: stops at a known batch."""

    def __init__(self, seconds: int) -> None:
        super().__init__(duration=timedelta(seconds=seconds), interval="step", verbose=False)
        self.batches = 0

    def on_train_batch_end(self, trainer, *args, **kwargs) -> None:
        self.batches += 1
        super().on_train_batch_end(trainer, *args, **kwargs)

    def time_elapsed(self, stage: str = "train") -> float:
        return self.batches + self._offset if stage == "train" else 0.0


def test_time_limit_mid_epoch_writes_an_exact_mid_epoch_checkpoint(make_cfg, tmp_path):
    """max_time reached after batch 6 (2nd of epoch 1) or 4 (an epoch end): the run ends normally with
    status interrupted, and resuming with more time gives the weights of 8 batches in one go."""
    def clock(seconds):
        return ["+callbacks.clock._target_=tests.test_resume.BatchClock", f"+callbacks.clock.seconds={seconds}"]

    full = tmp_path / "full"
    train(make_cfg(*overrides("dcgan", "trainer.max_epochs=2"), run_dir=full))
    expected, _ = weights(full)
    for seconds in (6, 4):
        cut = tmp_path / f"cut{seconds}"
        # with the sample grids and curves of a run: the epoch-end hooks run as after any epoch
        train(make_cfg(*[o for o in overrides("dcgan", "trainer.max_epochs=2", *clock(seconds))
                         if not o.endswith("=null")], run_dir=cut))
        assert (cut / "samples" / "final.png").is_file() and (cut / "curves.png").is_file()
        assert not list((cut / "checkpoints").glob(".time_limit*"))  # moved in place of last.ckpt
        summary = json.loads((cut / "metrics.json").read_text())
        assert (summary["status"], summary["reason"], summary["batches_seen"]) == ("interrupted", "max_time", seconds)
        ckpt = cut / "checkpoints" / "last.ckpt"
        assert epochs_completed(weights(cut)[1]) == ((1, 2) if seconds == 6 else (1, None))
        with refused("trainer.max_time", "0:00:0", "ckpt_path=", "last.ckpt", "raise trainer.max_time"):
            train(make_cfg(*overrides("dcgan", "trainer.max_epochs=2", *clock(seconds), f"ckpt_path={ckpt}"),
                           run_dir=tmp_path / f"spent{seconds}"))
        resumed = tmp_path / f"resumed{seconds}"
        train(make_cfg(*overrides("dcgan", "trainer.max_epochs=2", *clock(100), f"ckpt_path={ckpt}"), run_dir=resumed))
        got, state = weights(resumed)
        assert_same(expected, got)
        assert state["gan_lab"]["batches_seen"] == 8
        assert json.loads((resumed / "metrics.json").read_text())["status"] == "completed"


def test_max_batches_stops_after_that_batch_and_resumes_exactly(make_cfg, tmp_path):
    """trainer.max_batches=6 stops after the 2nd batch of epoch 1 (counted in batches whatever n_critic),
    the run is completed, and a resume with max_batches=8 gives the weights of 8 batches in one go."""
    full = tmp_path / "full"
    train(make_cfg(*overrides("dcgan", "trainer.max_epochs=2", "model.n_critic=2"), run_dir=full))
    expected, _ = weights(full)
    cut = tmp_path / "cut"
    train(make_cfg(*overrides("dcgan", "trainer.max_epochs=-1", "trainer.max_batches=6", "model.n_critic=2"),
                   run_dir=cut))
    summary = json.loads((cut / "metrics.json").read_text())
    assert (summary["status"], summary["batches_seen"]) == ("completed", 6)
    _, state = weights(cut)
    assert epochs_completed(state) == (1, 2) and state["gan_lab"]["batches_seen"] == 6
    assert not list((cut / "checkpoints").glob(".max_batches*"))  # moved in place of last.ckpt
    ckpt = cut / "checkpoints" / "last.ckpt"
    with refused("trainer.max_batches=6", "ckpt_path=", "last.ckpt", "6 batches", "raise trainer.max_batches"):
        train(make_cfg(*overrides("dcgan", "trainer.max_epochs=-1", "trainer.max_batches=6", "model.n_critic=2",
                                  f"ckpt_path={ckpt}"), run_dir=tmp_path / "spent"))
    resumed = tmp_path / "resumed"
    train(make_cfg(*overrides("dcgan", "trainer.max_epochs=-1", "trainer.max_batches=8", "model.n_critic=2",
                              f"ckpt_path={ckpt}"), run_dir=resumed))
    got, state = weights(resumed)
    assert_same(expected, got)
    assert state["gan_lab"]["batches_seen"] == 8
    with pytest.raises(UserError, match=r"trainer.max_batches=0 must be an integer >= 1"):
        train(make_cfg(*overrides("dcgan", "trainer.max_batches=0"), run_dir=tmp_path / "zero"))


class KillAtFitEnd(L.Callback):
    """SIGKILLs the process at the end of the fit, after the epoch-end last.ckpt, before the limit's
    checkpoint replaces it (checkpoint callbacks run last)."""

    def on_fit_end(self, trainer, pl_module) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_kill_after_the_limits_batch_resumes_from_its_mid_epoch_checkpoint(make_cfg, tmp_path):
    full = tmp_path / "full"
    train(make_cfg(*overrides("dcgan", "trainer.max_epochs=2", "model.n_critic=2"), run_dir=full))
    cut = tmp_path / "cut"
    res = run_cli(*TINY, *overrides("dcgan", "trainer.max_epochs=-1", "trainer.max_batches=6", "model.n_critic=2",
                                    "+callbacks.kill._target_=tests.test_resume.KillAtFitEnd"), f"hydra.run.dir={cut}")
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    assert (cut / "checkpoints" / ".max_batches.last.ckpt").is_file()  # beside the epoch-end save
    resumed = tmp_path / "resumed"
    train(make_cfg(*overrides("dcgan", "trainer.max_epochs=-1", "trainer.max_batches=8", "model.n_critic=2",
                              f"ckpt_path={cut / 'checkpoints' / 'last.ckpt'}"), run_dir=resumed))
    got, state = weights(resumed)
    assert_same(weights(full)[0], got)
    assert state["gan_lab"]["batches_seen"] == 8


class FailAtEpochEnd(L.Callback):
    """Raises in the epoch-end work (as a full disk writing a grid would), after Lightning's last.ckpt."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:
            raise OSError(28, "No space left on device")


def test_a_failure_after_the_limits_batch_leaves_its_mid_epoch_checkpoint(make_cfg, tmp_path):
    """trainer.max_batches=6 cuts epoch 1 after its 2nd batch; the epoch-end work then fails. last.ckpt
    is the cut batch's state (mid-epoch, resumable exactly), not the epoch-end one written before the
    failure, which would resume as if epoch 1 had been completed."""
    fail = ["+callbacks.fail._target_=tests.test_resume.FailAtEpochEnd"]
    cut = tmp_path / "cut"
    with pytest.raises(OSError, match="No space left"):
        train(make_cfg(*overrides("dcgan", "trainer.max_epochs=-1", "trainer.max_batches=6", *fail), run_dir=cut))
    _, state = weights(cut)
    assert epochs_completed(state) == (1, 2) and state["gan_lab"]["batches_seen"] == 6
    assert not list((cut / "checkpoints").glob(".max_batches*"))
    summary = json.loads((cut / "metrics.json").read_text())  # the run says how it ended
    assert summary["status"] == "failed" and summary["error"] == "OSError: [Errno 28] No space left on device"
    assert summary["batches_seen"] == 6


def test_unreadable_or_foreign_checkpoint_is_one_sentence_before_training(make_cfg, tmp_path):
    from gan_lab.checkpoint_io import read_checkpoint

    run = tmp_path / "run"
    train(make_cfg(*overrides("dcgan", "trainer.max_epochs=1"), run_dir=run))
    good = run / "checkpoints" / "last.ckpt"
    truncated = tmp_path / "copied_halfway.ckpt"
    truncated.write_bytes(good.read_bytes()[:4000])
    with refused(f"ckpt_path={truncated}", "truncated", "another checkpoint"):
        train(make_cfg(*overrides("dcgan", f"ckpt_path={truncated}"), run_dir=tmp_path / "a"))
    with refused("ckpt_path=", "last.ckpt", "generator.net.0.weight", "[16, 16, 4, 4]", "[16, 8, 4, 4]",
                 ".hydra/overrides.yaml"):
        train(make_cfg(*overrides("dcgan", "model.generator.width=4", f"ckpt_path={good}"), run_dir=tmp_path / "b"))
    for failed in ("a", "b"):
        assert not (tmp_path / failed / "checkpoints").exists()  # nothing trained
    with refused(f"ckpt={truncated}", "another checkpoint"):
        read_checkpoint(truncated, what="ckpt")  # what evaluate and generate load with (load_run)
    weights_only = tmp_path / "weights.pt"
    torch.save(torch.load(good, weights_only=False)["state_dict"], weights_only)  # a bare state_dict
    with refused(f"ckpt_path={weights_only}", "'state_dict'", "<run>/checkpoints/last.ckpt"):
        train(make_cfg(*overrides("dcgan", f"ckpt_path={weights_only}"), run_dir=tmp_path / "c"))


@pytest.mark.parametrize("workers", [1])
def test_resume_with_data_workers_equals_uninterrupted(make_cfg, tmp_path, workers):
    """With DataLoader worker processes (which draw the epoch's order when their iterator is made, before
    the resume is applied, and draw a seed only for the first epoch): 12 batches in one go == 6
    (SIGTERM mid-epoch) + resume == 4 (one epoch) + resume."""
    extra = ["model.generator.width=8", "model.discriminator.width=8", f"data.num_workers={workers}",
             "trainer.max_epochs=3"]
    full = tmp_path / "full"
    train(make_cfg(*overrides("dcgan", *extra), run_dir=full))
    expected, _ = weights(full)
    cut = tmp_path / "cut"
    kill = ["+callbacks.kill._target_=tests.test_resume.SignalAt", "+callbacks.kill.batch=6"]
    with pytest.raises(TrainingInterrupted):
        train(make_cfg(*overrides("dcgan", *extra, *kill), run_dir=cut))
    after = tmp_path / "after"
    train(make_cfg(*overrides("dcgan", *extra, f"ckpt_path={cut / 'checkpoints' / 'last.ckpt'}"), run_dir=after))
    got, state = weights(after)
    assert state["gan_lab"]["batches_seen"] == 12
    assert_same(expected, got)
    # resumed at an epoch's start: the resumed epoch's order, and the random stream, as uninterrupted
    half = tmp_path / "half"
    train(make_cfg(*overrides("dcgan", *extra[:-1], "trainer.max_epochs=1"), run_dir=half))
    again = tmp_path / "again"
    train(make_cfg(*overrides("dcgan", *extra, f"ckpt_path={half / 'checkpoints' / 'last.ckpt'}"), run_dir=again))
    assert_same(expected, weights(again)[0])
