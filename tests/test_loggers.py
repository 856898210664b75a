"""Loggers: TensorBoard and W&B (offline, never prompting) through the real entry point."""
from __future__ import annotations

import os

from tests.conftest import TINY, run_cli


def test_wandb_offline_without_key_and_tensorboard(tmp_path):
    run = tmp_path / "run"
    env = {"HOME": str(tmp_path / "home"), "WANDB_MODE": "", "WANDB_API_KEY": "",
           "WANDB_DIR": str(tmp_path / "wandb_cache"), "WANDB_SILENT": "true"}
    os.makedirs(env["HOME"], exist_ok=True)
    res = run_cli(*TINY, "logger=[csv,tensorboard,wandb]", f"hydra.run.dir={run}", env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "no API key configured, logging offline" in res.stderr + res.stdout
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "metrics.csv").is_file()


def test_resuming_into_the_same_run_directory_appends_to_metrics_csv(make_cfg, tmp_path):
    import csv

    from gan_lab.run import train

    run = tmp_path / "run"
    small = ["model.generator.width=8", "model.discriminator.width=8", "trainer.log_every_n_steps=1",
             "logger=csv"]
    train(make_cfg(*small, "trainer.max_epochs=1", run_dir=run))
    first = list(csv.DictReader((run / "metrics.csv").open()))
    train(make_cfg(*small, "trainer.max_epochs=2", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", run_dir=run))
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert rows[:len(first)] == first, "the first run's history was lost"
    seen = [float(r["train/batches_seen"]) for r in rows if r.get("train/batches_seen")]
    assert seen == sorted(seen) and len(seen) == len(set(seen)) and max(seen) > max(
        float(r["train/batches_seen"]) for r in first if r.get("train/batches_seen"))
