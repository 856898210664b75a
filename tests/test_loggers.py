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
