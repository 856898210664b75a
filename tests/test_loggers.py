"""Loggers: TensorBoard and W&B (offline, never prompting) through the real entry point."""
from __future__ import annotations

import os

import pytest

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


def test_a_new_column_rewrites_metrics_csv_atomically(tmp_path, monkeypatch):
    """The first value of a new key rewrites the whole file under a new header; a failure during that
    rewrite (a full disk, a kill) leaves the history as it was, not a truncated file."""
    import csv

    from gan_lab.loggers import CSVLogger

    logger = CSVLogger(save_dir=str(tmp_path), name="", version="")
    for step in range(3):
        logger.log_metrics({"train/d_loss": 1.0 + step}, step=step)
    logger.save()
    path = tmp_path / "metrics.csv"
    before = path.read_text()
    logger.log_metrics({"train/d_loss": 4.0, "val/fid": 9.0}, step=3)

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        logger.save()
    assert path.read_text() == before  # the three rows, intact
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temporary file left
    monkeypatch.undo()
    logger.save()  # the same rows again, now that the disk has room
    rows = list(csv.DictReader(path.open()))
    assert [r["train/d_loss"] for r in rows] == ["1.0", "2.0", "3.0", "4.0"] and rows[-1]["val/fid"] == "9.0"
