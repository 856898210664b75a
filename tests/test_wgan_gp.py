"""WGAN-GP: the penalty's value on known critics, the presets of model=wgan_gp, real training runs,
the study's dense generator, and the hinge loss / spectral norm options of the discriminator."""
from __future__ import annotations

import csv
import json
import math

import pytest
import torch
import yaml

from gan_lab.build import build_datamodule, build_model
from gan_lab.losses import gradient_penalty
from gan_lab.nets import DCGANDiscriminator, DenseDCGANGenerator
from gan_lab.run import train
from tests.conftest import TINY, run_cli

NARROW = ["model.generator.width=8", "model.discriminator.width=8"]


def logged(run_dir) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    with open(run_dir / "metrics.csv") as fh:
        for row in csv.DictReader(fh):
            for key, value in row.items():
                if value:
                    out.setdefault(key, []).append(float(value))
    return out


# --- the gradient penalty -------------------------------------------------------------------


def linear_critic(norm: float, shape=(1, 4, 4)):
    """D(x) = <w, x> with ||w|| = norm: its gradient is w at every point."""
    w = torch.randn(math.prod(shape), generator=torch.Generator().manual_seed(0))
    w = w / w.norm() * norm
    return lambda x: x.flatten(1) @ w


def test_gradient_penalty_is_zero_for_a_unit_gradient_linear_critic():
    real, fake = torch.randn(16, 1, 4, 4), torch.randn(16, 1, 4, 4)
    gp = gradient_penalty(linear_critic(1.0), real, fake)
    assert gp.item() == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("norm", [0.0, 0.5, 2.0, 3.0])
def test_gradient_penalty_is_positive_otherwise(norm):
    real, fake = torch.randn(16, 1, 4, 4), torch.randn(16, 1, 4, 4)
    gp = gradient_penalty(linear_critic(norm), real, fake)
    assert gp.item() == pytest.approx((norm - 1.0) ** 2, rel=1e-5)
    assert gp.item() > 0


def test_gradient_penalty_reaches_the_critic_parameters():
    critic = DCGANDiscriminator(16, 1, 8, norm="layer")
    gp = gradient_penalty(critic, torch.randn(4, 1, 16, 16), torch.randn(4, 1, 16, 16))
    gp.backward()
    assert gp.item() > 0
    convs = [m for m in critic.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in convs)


# --- presets and training -------------------------------------------------------------------


def test_model_wgan_gp_presets_loss_optimizer_and_n_critic(make_cfg):
    cfg = make_cfg("model=wgan_gp", *NARROW)
    build_datamodule(cfg)
    model = build_model(cfg)
    assert model.loss.name == "wasserstein" and model.n_critic == 5 and model.gp_weight == 10.0
    layers = list(model.discriminator.modules())  # layer norm (GroupNorm of one group), no batch norm
    assert any(isinstance(m, torch.nn.GroupNorm) for m in layers)
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d, torch.nn.SyncBatchNorm)) for m in layers)
    (opt_d, opt_g), _ = model.configure_optimizers()
    for opt in (opt_d, opt_g):
        assert isinstance(opt, torch.optim.Adam)
        assert opt.param_groups[0]["lr"] == 1e-4 and tuple(opt.param_groups[0]["betas"]) == (0.0, 0.9)


def test_command_line_and_experiments_override_the_presets(make_cfg):
    cfg = make_cfg("model=wgan_gp", "loss=hinge", "optimizer=rmsprop", "model.n_critic=2")
    assert cfg.loss.name == "hinge" and cfg.optimizer.generator._target_ == "torch.optim.RMSprop"
    assert cfg.model.n_critic == 2
    cfg = make_cfg("model=wgan_gp", "optimizer.generator.lr=3e-4")
    assert cfg.optimizer.generator.lr == 3e-4 and cfg.optimizer.discriminator.lr == 1e-4
    cfg = make_cfg()  # other models keep the global defaults
    assert cfg.loss.name == "non_saturating" and cfg.optimizer.generator.betas == [0.5, 0.999]


def test_wgan_gp_trains_and_logs_penalty_and_wasserstein(make_cfg, tmp_path):
    cfg = make_cfg("model=wgan_gp", *NARROW, "trainer.max_epochs=1")
    train(cfg)
    run = tmp_path / "run"
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["batches_seen"] == 3
    assert summary["optimizer_steps"] == 3 * (5 + 1)  # n_critic = 5 critic steps per generator step
    values = logged(run)
    for key in ("train/gradient_penalty", "train/wasserstein", "train/d_loss", "train/g_loss"):
        assert len(values[key]) == 3 and all(math.isfinite(v) for v in values[key])
    assert all(v >= 0 for v in values["train/gradient_penalty"])
    # wasserstein = d_real - d_fake, both raw critic values
    assert values["train/wasserstein"][-1] == pytest.approx(
        values["train/d_real"][-1] - values["train/d_fake"][-1], abs=1e-4)


@pytest.mark.slow
def test_wgan_gp_through_the_entry_point(tmp_path):
    run = tmp_path / "cli"
    res = run_cli(*TINY, "model=wgan_gp", *NARROW, "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                  f"hydra.run.dir={run}")
    assert res.returncode == 0, res.stderr[-3000:]
    cfg = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    assert cfg["loss"]["name"] == "wasserstein"
    assert cfg["optimizer"]["generator"]["lr"] == 1e-4 and cfg["optimizer"]["generator"]["betas"] == [0.0, 0.9]
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["optimizer_steps"] == summary["batches_seen"] * 6


# --- the study's dense generator ------------------------------------------------------------


def test_dense_generator_is_the_study_architecture_at_128():
    g = DenseDCGANGenerator(64, 128, 3, width=32, max_mult=16, dense_channels=256)
    convs = [m for m in g.net if isinstance(m, torch.nn.ConvTranspose2d)]
    # parameter counts of the report's summary table (Figure 8a)
    assert [sum(p.numel() for p in m.parameters()) for m in convs] == [3276800, 3276800, 819200, 204800, 51200, 1536]
    assert sum(p.numel() for p in g.dense[0].parameters()) == 266240
    assert sum(isinstance(m, torch.nn.Dropout) for m in g.net) == 2
    g.eval()
    with torch.no_grad():
        out = g(torch.randn(2, 64))
    assert out.shape == (2, 3, 128, 128) and out.abs().max() <= 1


def test_wgan_gp_trains_with_the_dense_generator(make_cfg, tmp_path):
    cfg = make_cfg("model=wgan_gp", "model/generator=dense_dcgan", "model.generator.width=4",
                   "model.generator.dense_channels=8", "model.discriminator.width=8", "trainer.max_epochs=1")
    assert cfg.model.generator._target_ == "gan_lab.nets.DenseDCGANGenerator"
    train(cfg)
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["status"] == "completed" and math.isfinite(summary["final"]["train/g_loss"])


# --- hinge loss and spectral normalisation --------------------------------------------------


def largest_singular_values(discriminator) -> list[float]:
    out = []
    for m in discriminator.modules():
        if isinstance(m, torch.nn.Conv2d):
            out.append(torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2).item())
    return out


def test_hinge_loss_with_spectral_norm_trains_and_constrains_the_weights(make_cfg, tmp_path):
    overrides = ("loss=hinge", "model.discriminator.spectral_norm=true", *NARROW)
    train(make_cfg(*overrides))
    run = tmp_path / "run"
    values = logged(run)
    assert len(values["train/d_loss"]) == 6 and all(math.isfinite(v) for v in values["train/d_loss"])
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    cfg = make_cfg(*overrides)
    build_datamodule(cfg)
    model = build_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(state["state_dict"])
    key = "discriminator.features.0.parametrizations.weight.original"
    assert not torch.equal(before[key], model.state_dict()[key])  # it trained
    model.eval()  # use the stored power-iteration vectors
    sigmas = largest_singular_values(model.discriminator)
    assert len(sigmas) == 4
    assert all(0.99 <= s <= 1.05 for s in sigmas), sigmas
    # the same discriminator without spectral norm is far from 1-Lipschitz per layer
    plain = DCGANDiscriminator(32, 1, 8, norm="batch")
    assert all(s < 0.9 or s > 1.1 for s in largest_singular_values(plain))


@pytest.mark.parametrize("model, gp", [("wgan_gp", True), ("pggan", True), ("wgan", False)])
def test_16_mixed_is_refused_with_a_gradient_penalty(make_cfg, model, gp):
    cfg = make_cfg(f"model={model}")
    build_datamodule(cfg, setup=False)
    built = build_model(cfg)
    refusal = built.precision_refusal("16-mixed")
    assert (refusal is not None) == gp
    if gp:
        assert "trainer.precision=16-mixed" in refusal and "trainer.precision=bf16-mixed" in refusal
    assert built.precision_refusal("bf16-mixed") is None and built.precision_refusal("32-true") is None
