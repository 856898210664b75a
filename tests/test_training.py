"""Short trainings on the bundled digits: losses move, step counts follow n_critic / n_gen."""
from __future__ import annotations

import csv
import json
import math

import pytest
import torch
import torch.nn.functional as F

from gan_lab.build import build_model
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
    train(cfg)
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["batches_seen"] == 6 and summary["optimizer_steps"] == 6 * (2 + 3)

    # the trained D's loss is the BCE of its logits against 0.8 (real) and 0.1 (generated), written out
    model = build_model(cfg)  # cfg holds the data facts the run published
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    model.load_state_dict(state["state_dict"])
    model.eval()  # BatchNorm on its running statistics: D's logits do not depend on the batch
    g = torch.Generator().manual_seed(0)
    real, fake = torch.rand(2, 8, 1, 32, 32, generator=g) * 2 - 1
    labels = torch.zeros(8, dtype=torch.long)
    with torch.no_grad():
        d_loss = model.d_step(real, labels, fake, labels)["d_loss"]
        real_logits, fake_logits = model.discriminator(real).flatten(), model.discriminator(fake).flatten()

    def bce(logits: torch.Tensor, target: float) -> torch.Tensor:
        return -(target * F.logsigmoid(logits) + (1 - target) * F.logsigmoid(-logits)).mean()

    assert float(d_loss) == pytest.approx(float(bce(real_logits, 0.8) + bce(fake_logits, 0.1)), rel=1e-5)
    assert float(d_loss) != pytest.approx(float(bce(real_logits, 1.0) + bce(fake_logits, 0.0)), rel=1e-3)


@pytest.mark.parametrize("bar", [True, False])
def test_losses_go_through_lightnings_log_only_for_a_progress_bar(make_cfg, bar):
    """Lightning's ``log`` costs about a millisecond per logging step; d_loss and g_loss go through it
    only for a progress bar to show them, never when there is none."""
    from gan_lab.build import build_callbacks, build_datamodule, build_trainer

    cfg = make_cfg("trainer=debug", "noise.latent_dim=16", "data.image_size=16", "model.generator.width=4",
                   "model.discriminator.width=4", f"trainer.enable_progress_bar={str(bar).lower()}", tiny=False)
    dm = build_datamodule(cfg)
    model = build_model(cfg)
    trainer = build_trainer(cfg, build_callbacks(cfg), [])
    trainer.fit(model, datamodule=dm)
    assert "train/d_loss" in model.logged and "train/g_loss" in model.logged       # the loggers' values
    shown = trainer.progress_bar_metrics
    assert (shown.get("d_loss"), shown.get("g_loss")) == ((pytest.approx(model.logged["train/d_loss"]),
                                                           pytest.approx(model.logged["train/g_loss"])) if bar
                                                          else (None, None))
