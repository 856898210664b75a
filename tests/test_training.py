"""Short trainings on the bundled digits: losses move, step counts follow n_critic / n_gen."""
from __future__ import annotations

import csv
import json
import math

import pytest

from gan_lab.run import train


def logged(run_dir, key):
    with open(run_dir / "metrics.csv") as fh:
        return [float(r[key]) for r in csv.DictReader(fh) if r.get(key)]


@pytest.mark.parametrize("loss", ["non_saturating", "minimax", "wasserstein", "hinge", "least_squares"])
def test_losses_move_for_every_objective(make_cfg, tmp_path, loss):
    cfg = make_cfg(f"loss={loss}", "trainer.limit_train_batches=6", "trainer.max_epochs=1",
                   "model.generator.width=8", "model.discriminator.width=8")
    train(cfg)
    d, g = logged(tmp_path / "run", "train/d_loss"), logged(tmp_path / "run", "train/g_loss")
    assert len(d) == 6 and all(math.isfinite(v) for v in d + g)
    assert max(d) - min(d) > 1e-3 and max(g) - min(g) > 1e-3


def test_step_ratio_and_label_smoothing(make_cfg, tmp_path):
    cfg = make_cfg("model.n_critic=2", "model.n_gen=3", "loss.discriminator.real_target=0.8",
                   "loss.discriminator.fake_target=0.1", "model.generator.width=8",
                   "model.discriminator.width=8")
    model_before = cfg.model.n_critic
    train(cfg)
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert model_before == 2
    assert summary["batches_seen"] == 6 and summary["optimizer_steps"] == 6 * (2 + 3)
