"""Loss functions on known inputs, noise moments (interpolated latents included), the piecewise schedule."""
from __future__ import annotations

import json
import math

import pytest
import torch
from hydra.utils import instantiate

from gan_lab import losses
from gan_lab.build import check_types
from gan_lab.errors import UserError
from gan_lab.noise import Gamma, Interpolated, Normal, Uniform
from gan_lab.run import train
from gan_lab.schedulers import ExponentialLR, PiecewiseLR
from tests.conftest import compose_config, refused

LOG2 = math.log(2.0)


def test_bce_losses_at_zero_logits():
    zero = torch.zeros(8)
    assert losses.d_bce(zero, zero).item() == pytest.approx(2 * LOG2)
    assert losses.g_non_saturating(zero).item() == pytest.approx(LOG2)
    assert losses.g_minimax(zero).item() == pytest.approx(-LOG2)


def test_bce_with_label_smoothing_is_minimal_at_the_smoothed_target():
    # BCE(sigmoid(x), t) is minimised at sigmoid(x) = t: with real target 0.8 the optimum logit is logit(0.8)
    logit = torch.tensor([math.log(0.8 / 0.2)])
    at_opt = losses.d_bce(logit, torch.tensor([-50.0]), real_target=0.8)
    off = losses.d_bce(logit + 0.5, torch.tensor([-50.0]), real_target=0.8)
    assert at_opt < off
    entropy = -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))
    assert at_opt.item() == pytest.approx(entropy, abs=1e-5)


def test_minimax_saturates_where_non_saturating_does_not():
    # When D confidently rejects fakes (very negative logits) the minimax gradient vanishes.
    fake = torch.full((4,), -8.0, requires_grad=True)
    (g_mm,) = torch.autograd.grad(losses.g_minimax(fake), fake)
    (g_ns,) = torch.autograd.grad(losses.g_non_saturating(fake), fake)
    assert g_mm.abs().max() < 1e-3 < g_ns.abs().min()


def test_wasserstein_hinge_least_squares_values():
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-1.0, 0.5])
    assert losses.d_wasserstein(real, fake).item() == pytest.approx(-0.25 - 1.0)
    assert losses.g_wasserstein(fake).item() == pytest.approx(0.25)
    # relu(1 - [2, 0]) = [0, 1]; relu(1 + [-1, .5]) = [0, 1.5]
    assert losses.d_hinge(real, fake).item() == pytest.approx(0.5 + 0.75)
    assert losses.d_least_squares(torch.ones(3), torch.zeros(3)).item() == pytest.approx(0.0)
    assert losses.g_least_squares(torch.zeros(3)).item() == pytest.approx(0.5)


def test_gradient_penalty_zero_for_unit_gradient_critic():
    w = torch.randn(12)
    w = w / w.norm()
    critic = lambda x: x.flatten(1) @ w  # noqa: E731 - gradient norm is exactly 1 everywhere
    real, fake = torch.randn(6, 3, 2, 2), torch.randn(6, 3, 2, 2)
    assert losses.gradient_penalty(critic, real, fake).item() == pytest.approx(0.0, abs=1e-10)
    steep = lambda x: 3 * (x.flatten(1) @ w)  # noqa: E731
    assert losses.gradient_penalty(steep, real, fake).item() == pytest.approx(4.0, rel=1e-5)


@pytest.mark.parametrize("noise", [Normal(64, 0.0, 1.0), Normal(64, -1.0, 10.0), Uniform(64, -1.0, 1.0),
                                   Gamma(64, 2.0, 1.0), Gamma(64, 0.5, 2.0),
                                   Interpolated(64, Normal(64), 0.3), Interpolated(64, Normal(64), 0.8),
                                   Interpolated(64, Gamma(64, 2.0, 1.0), 0.8)])
def test_noise_moments(noise):
    torch.manual_seed(0)
    z = noise.sample(4000, "cpu")
    assert z.shape == (4000, 64)
    assert z.mean().item() == pytest.approx(noise.mean, abs=0.03 * max(1.0, noise.std))
    assert z.std().item() == pytest.approx(noise.std, rel=0.03)
    torch.manual_seed(1)
    z_1 = noise.sample(4000, "cpu")
    torch.manual_seed(1)
    assert torch.equal(z_1, noise.sample(4000, "cpu"))  # a function of torch's seed, as a run is


@pytest.mark.parametrize("alpha,std", [
    (0.3, 0.761577),   # sqrt(0.3^2 + 0.7^2) = sqrt(0.58)
    (0.8, 0.824621),   # sqrt(0.8^2 + 0.2^2) = sqrt(0.68)
    (0.5, 0.707107),   # the narrowest blend: 1/sqrt(2)
    (1.0, 1.0),        # no blend: the base itself
])
def test_interpolated_latents_keep_the_mean_and_shrink_the_spread(alpha, std):
    noise = Interpolated(32, Normal(32, mean=1.5, std=2.0), alpha)
    assert noise.mean == 1.5 and noise.std == pytest.approx(2.0 * std, abs=1e-5)
    torch.manual_seed(0)
    z = noise.sample(8000, "cpu")
    assert z.shape == (8000, 32)
    assert z.mean().item() == pytest.approx(1.5, abs=0.03)
    assert z.std().item() == pytest.approx(2.0 * std, rel=0.02)
    # each coordinate is a blend of two independent draws, not a rescaled single draw
    if 0 < alpha < 1:
        base = Normal(32, mean=1.5, std=2.0)
        torch.manual_seed(3)
        z1, z2 = base.sample(10, "cpu"), base.sample(10, "cpu")
        torch.manual_seed(3)
        blend = noise.sample(10, "cpu")
        assert torch.allclose(blend, alpha * z1 + (1 - alpha) * z2, atol=1e-6)


@pytest.mark.parametrize("alpha", [1.5, -0.1])
def test_interpolated_alpha_outside_unit_interval_is_one_sentence(alpha):
    with refused(f"noise.alpha={alpha}", "noise.alpha=0.3"):
        check_types(compose_config(["noise=interpolated", f"noise.alpha={alpha}"]).noise, "noise")


def test_interpolated_base_must_match_the_latent_size():
    with refused("noise.base.latent_dim=8", "noise.latent_dim=16"):
        Interpolated(16, Normal(8), 0.3)
    with refused("noise.base='uniform'", "noise@noise.base=normal"):
        Interpolated(16, "uniform", 0.3)


def test_interpolated_config_is_a_noise_option(tmp_path):
    cfg = compose_config(["noise=interpolated", "noise.alpha=0.8", "noise.latent_dim=12"], tmp_path)
    noise = instantiate(cfg.noise)
    assert isinstance(noise, Interpolated) and noise.alpha == 0.8 and noise.latent_dim == 12
    assert isinstance(noise.base, Normal) and (noise.base.latent_dim, noise.base.mean, noise.base.std) == (12, 0.0, 1.0)
    assert cfg.model.generator.latent_dim == 12  # ${noise.latent_dim} still reaches the nets
    assert compose_config(["noise=interpolated"]).noise.alpha == 0.3
    # any distribution of the group can be the base
    swapped = instantiate(compose_config(["noise=interpolated", "noise@noise.base=uniform",
                                          "noise.latent_dim=5"]).noise)
    assert isinstance(swapped.base, Uniform) and swapped.base.latent_dim == 5
    assert swapped.std == pytest.approx(2 / math.sqrt(12) * math.sqrt(0.58))


def test_training_on_interpolated_latents(make_cfg, tmp_path):
    train(make_cfg("noise=interpolated", "noise.alpha=0.8", "model.generator.width=8", "model.discriminator.width=8"))
    run = tmp_path / "run"
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "completed" and summary["batches_seen"] == 6
    assert math.isfinite(summary["final"]["train/g_loss"]) and math.isfinite(summary["final"]["train/d_loss"])
    # the model's latents come from the blend: the grid's fixed latents have its spread (16 x 64 values)
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    fixed = state["fixed_noise"]
    assert fixed.shape[1] == 16
    assert fixed.std().item() == pytest.approx(math.sqrt(0.68), rel=0.1)


def test_gamma_support_is_positive():
    assert (Gamma(16, 2.0, 1.0).sample(1000) > 0).all()


@pytest.mark.parametrize("overrides,bad", [
    (["noise.latent_dim=0"], "noise.latent_dim=0"), (["noise.std=0"], "noise.std=0"),
    (["noise=gamma", "noise.concentration=-1.0"], "noise.concentration=-1.0")])
def test_noise_rejects_bad_parameters(overrides, bad):
    with pytest.raises(UserError, match=rf"^{bad} must be "):
        check_types(compose_config(overrides).noise, "noise")


def test_uniform_noise_needs_low_below_high():
    with refused("noise.low=1", "noise.high=-1"):
        Uniform(8, 1, -1)


def test_piecewise_schedule_table():
    milestones = [0, 25, 40, 50, 60, 70, 80, 100, 120, 140]
    lrs = [1e-3, 2e-4, 4e-5, 2e-5, 4e-5, 2e-5, 1e-5, 2e-5, 1e-5, 5e-6]
    opt = torch.optim.RMSprop([torch.nn.Parameter(torch.zeros(1))], lr=123.0, alpha=0.9)
    sch = PiecewiseLR(opt, milestones, lrs)
    seen = {}
    for epoch in range(150):
        seen[epoch] = opt.param_groups[0]["lr"]
        opt.step()
        sch.step()
    assert seen[0] == 1e-3 and seen[24] == 1e-3 and seen[25] == 2e-4 and seen[39] == 2e-4
    assert seen[40] == 4e-5 and seen[65] == 4e-5 and seen[99] == 1e-5 and seen[100] == 2e-5
    assert seen[149] == 5e-6
    # the state round-trips (resume keeps the table position)
    sch2 = PiecewiseLR(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), milestones, lrs)
    sch2.load_state_dict(sch.state_dict())
    assert sch2.last_epoch == 150


def test_piecewise_rejects_bad_tables():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(UserError):
        PiecewiseLR(opt, [0, 10], [1e-3])
    with pytest.raises(UserError):
        PiecewiseLR(opt, [5, 10], [1e-3, 1e-4])
    cfg = compose_config(["scheduler=piecewise", "scheduler.discriminator.milestones=[0,10]",
                          "scheduler.discriminator.lrs=[1e-3,-1e-4]"])
    with pytest.raises(UserError, match=r"^scheduler\.discriminator\.lrs=\[0\.001,-0\.0001\] must be "):
        check_types(cfg.scheduler.discriminator, "scheduler.discriminator")


def test_exponential_schedule_refuses_a_factor_that_is_not_positive():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    for gamma in (-0.5, 0):
        cfg = compose_config(["scheduler=exponential", f"scheduler.discriminator.gamma={gamma}"])
        with pytest.raises(UserError, match=rf"^scheduler\.discriminator\.gamma={gamma} must be "):
            check_types(cfg.scheduler.discriminator, "scheduler.discriminator")
    sch = ExponentialLR(opt, 0.5)
    opt.step()
    sch.step()
    assert opt.param_groups[0]["lr"] == 0.5
