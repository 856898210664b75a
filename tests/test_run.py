"""End-to-end runs of the real entry point on the bundled digits."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from gan_lab.run import train
from tests.conftest import TINY, refused, run_cli


def read_metrics(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_train_writes_run_directory(make_cfg, tmp_path):
    cfg = make_cfg("callbacks.periodic_checkpoint.every_n_epochs=1")
    train(cfg)
    run = tmp_path / "run"
    # last.ckpt and the periodic checkpoints coexist even at the same frequency
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch_0000.ckpt", "epoch_0001.ckpt",
                                                                      "last.ckpt"]
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == ["epoch_0000.png", "epoch_0001.png", "final.png"]
    assert (run / "curves.png").is_file()
    rows = read_metrics(run / "metrics.csv")
    logged = {k for row in rows for k, v in row.items() if v}
    assert {"train/d_loss", "train/g_loss", "train/d_real", "train/d_fake", "train/images_seen",
            "lr/discriminator", "lr/generator"} <= logged
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "completed"
    assert summary["batches_seen"] == 6 and summary["images_seen"] == 6 * 64
    # two optimiser steps per batch: Lightning's global_step unit, documented in the README
    assert summary["optimizer_steps"] == 12


def test_cli_end_to_end_and_resume(tmp_path):
    run1 = tmp_path / "first"
    res = run_cli(*TINY, f"hydra.run.dir={run1}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"run directory {run1}" in res.stdout
    assert (run1 / ".hydra" / "config.yaml").is_file()
    ckpt = run1 / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["epoch"] == 1 and state["gan_lab"]["batches_seen"] == 6  # written at the end of epoch 1
    # resume for two more epochs: epochs, counters and the fixed noise carry over
    run2 = tmp_path / "second"
    res = run_cli(*TINY, "trainer.max_epochs=4", f"ckpt_path={ckpt}", f"hydra.run.dir={run2}")
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((run2 / "metrics.json").read_text())
    assert summary["epochs"] == 4 and summary["batches_seen"] == 12
    resumed = torch.load(run2 / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert torch.equal(resumed["state_dict"]["fixed_noise"], state["state_dict"]["fixed_noise"])
    assert sorted(p.name for p in (run2 / "samples").glob("epoch_*.png")) == ["epoch_0002.png", "epoch_0003.png"]


def test_default_run_directory_is_named_after_model_and_data_without_warnings(tmp_path):
    """No hydra.run.dir: runs/<model>-<data>/<time>/ under the working directory, and the run-directory
    check (a Hydra callback, before Hydra publishes its config) resolves the name without a warning."""
    res = run_cli(*TINY, "logger=none", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    runs = list((tmp_path / "runs" / "dcgan-digits").iterdir())
    assert len(runs) == 1 and (runs[0] / "metrics.json").is_file()
    assert "Warning" not in res.stderr and "HydraConfig was not set" not in res.stderr, res.stderr[-2000:]


def test_sample_grids_at_chosen_batches_and_not_again_after_resume(make_cfg, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    small = ["model.generator.width=4", "model.discriminator.width=4", "callbacks.sample_grid.at_batches=[1,3,5]"]
    first = tmp_path / "first"
    train(make_cfg(*small, "trainer.max_epochs=1", "logger=tensorboard", run_dir=first))  # batches 1..3
    assert sorted(p.name for p in (first / "samples").glob("*.png")) == [
        "batch_0000001.png", "batch_0000003.png", "epoch_0000.png", "final.png"]
    # the grid of batch 1 is G after one update, not the one of the epoch end
    assert not np.array_equal(*(np.asarray(Image.open(first / "samples" / name))
                                for name in ("batch_0000001.png", "epoch_0000.png")))
    (events,) = (first / "tensorboard").glob("events.out.tfevents.*")
    logged = EventAccumulator(str(events), size_guidance={"images": 0}).Reload()
    assert [e.step for e in logged.Images("samples")] == [1, 3, 3, 3]  # batch 1, batch 3, epoch 0, final
    # resumed at batch 3 for a second epoch: batches 1 and 3 were trained before the checkpoint
    second = tmp_path / "second"
    train(make_cfg(*small, "trainer.max_epochs=2", f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}",
                   "logger=none", run_dir=second))
    assert sorted(p.name for p in (second / "samples").glob("*.png")) == [
        "batch_0000005.png", "epoch_0001.png", "final.png"]


def test_sample_grid_at_batches_must_be_batch_numbers(make_cfg):
    with refused("callbacks.sample_grid.at_batches=[0,100]", "integers >= 1"):
        train(make_cfg("callbacks.sample_grid.at_batches=[0,100]"))


@pytest.mark.parametrize("overrides,named", [
    (["optimized_metric=val/fid"], "callbacks=with_metrics"),  # no evaluation in the run
    (["optimized_metric=val/foo", "callbacks=with_metrics", "callbacks.metrics.evaluator.metrics=[scores]"],
     "val/d_real"),
])
def test_an_optimized_metric_no_evaluation_logs_is_refused_before_training(make_cfg, tmp_path, overrides, named):
    with refused(overrides[0], named):
        train(make_cfg(*overrides))
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_an_optimized_metric_training_does_not_log_stops_the_run_after_its_first_batch(make_cfg, tmp_path):
    with refused("optimized_metric=train/foo", "train/d_loss"):
        train(make_cfg("optimized_metric=train/foo"))
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["status"] == "failed" and summary["batches_seen"] == 1
    assert train(make_cfg("optimized_metric=train/d_real", run_dir=tmp_path / "ok")) is not None


def test_several_devices_without_a_ddp_trainer_are_refused_before_training(make_cfg, tmp_path):
    with refused("trainer.devices=3", "trainer.strategy=auto", "trainer=ddp_cpu"):
        train(make_cfg("trainer.devices=3"))
    assert not (tmp_path / "run" / "metrics.json").exists()
