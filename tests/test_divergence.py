"""Divergence guard: NaN weights, NaN losses and losses beyond a bound stop the run cleanly."""
from __future__ import annotations

import csv
import json

import lightning as L
import pytest
import torch

from gan_lab.build import build_callbacks
from gan_lab.errors import TrainingDiverged, UserError
from gan_lab.run import train
from tests.conftest import TINY, refused, run_cli

SMALL = ["model.generator.width=8", "model.discriminator.width=8", "data.image_size=16",
         "data.batch_size=16", "callbacks.sample_grid=null"]


class PoisonAt(L.Callback):
    """Writes a NaN into the generator's first weight at the end of batch ``batch``."""

    def __init__(self, batch: int) -> None:
        self.batch = batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.batches_seen == self.batch:
            with torch.no_grad():
                next(pl_module.generator.parameters()).view(-1)[0] = float("nan")


class NanLatents(L.Callback):
    """Makes the latent distribution's mean NaN when training starts (with ``on``): NaN fakes and losses
    from the first batch on (a config cannot ask for it: ``noise.mean`` must be finite)."""

    def __init__(self, on: bool = True) -> None:
        self.on = on

    def on_train_start(self, trainer, pl_module) -> None:
        if self.on:
            pl_module.noise.mean = float("nan")


NAN_LATENTS = "+callbacks.nan_latents._target_=tests.test_divergence.NanLatents"


def test_nan_weights_stop_and_keep_last_good_checkpoint(make_cfg, tmp_path):
    run = tmp_path / "run"
    poison = ["+callbacks.poison._target_=tests.test_divergence.PoisonAt", "+callbacks.poison.batch=4"]
    with pytest.raises(TrainingDiverged) as info:
        train(make_cfg(*SMALL, *poison, run_dir=run))
    message = str(info.value)
    # poisoned after batch 4 (after the guard's check of that batch): found at the check of batch 5
    kept = str(run / "checkpoints" / "last.ckpt")  # the last good checkpoint
    assert all(s in message for s in ("batch 5 (epoch 1)", "train/d_loss=nan", "weights=nan", kept)), message
    assert "\n" not in message
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["gan_lab"]["batches_seen"] == 3  # the epoch-0 checkpoint, never overwritten
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "diverged" and summary["diverged"]["batch"] == 5
    assert summary["diverged"]["values"]["weights"] == "nan"
    assert (run / "curves.png").is_file()  # the curves up to the divergence
    with open(run / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["diverged"] for r in rows if r.get("diverged")] == ["1.0"]


def test_nan_loss_and_loss_bound(make_cfg, tmp_path):
    # NaN latents make NaN fakes and losses at the first check, before any checkpoint exists
    with refused("batch 1 (epoch 0)", "train/d_loss=nan", "no checkpoint", error=TrainingDiverged):
        train(make_cfg(*SMALL, NAN_LATENTS, run_dir=tmp_path / "nan"))
    # a finite loss beyond the bound stops only after `patience` consecutive checks
    with refused("batch 2 (epoch 0)", "train/d_loss=", "max_abs_loss=0.001", "2 checks", error=TrainingDiverged):
        train(make_cfg(*SMALL, "callbacks.divergence.max_abs_loss=1e-3", "callbacks.divergence.patience=2",
                       run_dir=tmp_path / "bound"))
    assert json.loads((tmp_path / "bound" / "metrics.json").read_text())["status"] == "diverged"


def test_checks_only_every_n_batches(make_cfg, tmp_path):
    """Between checks no loss is read back: a bound violated on every batch is seen every 2nd one
    (after batches 2, 4 and 6)."""
    with refused("batch 6 (epoch 1)", error=TrainingDiverged):
        train(make_cfg(*SMALL, "callbacks.divergence.max_abs_loss=1e-3", "callbacks.divergence.patience=3",
                       "callbacks.divergence.check_every_n_batches=2", run_dir=tmp_path / "r"))


@pytest.mark.parametrize("override", ["callbacks.divergence.patience=0", "callbacks.divergence.max_abs_loss=-1",
                                      "callbacks.divergence.check_every_n_batches=0"])
def test_guard_arguments_are_checked(make_cfg, override):
    with pytest.raises(UserError, match=rf"^{override} must be "):
        build_callbacks(make_cfg(override))


@pytest.mark.slow  # a two-job multirun in a subprocess
def test_multirun_goes_on_after_a_diverged_job(tmp_path):
    sweep = tmp_path / "sweep"
    res = run_cli("-m", *TINY, *SMALL, NAN_LATENTS, "+callbacks.nan_latents.on=true,false",
                  f"hydra.sweep.dir={sweep}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "gan_lab: error: training diverged at batch 1" in res.stderr and "Traceback" not in res.stderr
    assert json.loads((sweep / "0" / "metrics.json").read_text())["status"] == "diverged"
    assert json.loads((sweep / "1" / "metrics.json").read_text())["status"] == "completed"
