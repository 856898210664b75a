"""Every option of every config group composes; objects build from each."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from gan_lab.build import build_datamodule, build_model
from gan_lab.losses import GANLoss
from gan_lab.noise import Noise
from tests.conftest import CONF, compose_config

GROUPS = ["model", "data", "loss", "optimizer", "scheduler", "noise", "trainer", "logger", "callbacks",
          "experiment"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


CASES = [(g, o) for g in GROUPS for o in options(g)]


def test_every_group_has_options():
    assert all(options(g) for g in GROUPS)


@pytest.mark.parametrize("group,option", CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_composes_and_builds(group, option, tmp_path):
    # the K+1-way objective is ArtGAN's alone: its model composes with it
    cfg = compose_config([f"{group}={option}", *(["model=artgan"] if (group, option) == ("loss", "categorical") else [])],
                         tmp_path)
    if group != "experiment":  # experiments are `@package _global_` overrides
        assert group in cfg
    if group == "noise":
        check_noise(instantiate(cfg.noise), cfg.noise.latent_dim)
    if group == "loss":
        check_loss(instantiate(cfg.loss), option)
    if cfg.data._target_ == "gan_lab.data.Digits":
        # the bundled data is always there: build the DataModule and the whole model
        build_datamodule(cfg)
        model = build_model(cfg)
        opts, _ = model.configure_optimizers()
        assert len(opts) == 2 and all(isinstance(o, torch.optim.Optimizer) for o in opts)
        images = model.sample(n=2)
        assert images.shape[:2] == (2, cfg.data.channels) and images.min() >= -1 and images.max() <= 1


def check_noise(noise: Noise, latent_dim: int) -> None:
    """Draws of the configured shape whose moments are the distribution's analytic ones."""
    assert isinstance(noise, Noise)
    z = noise.sample(4096)
    assert z.shape == (4096, latent_dim)
    n = z.numel()
    assert abs(float(z.mean()) - noise.mean) < 6 * noise.std / n ** 0.5
    assert float(z.std()) == pytest.approx(noise.std, rel=0.05)


def check_loss(loss: GANLoss, option: str) -> None:
    """On logits of a D that tells real from generated images, D's loss is lower than on logits of a
    fooled D, and G's loss is lower when D reads its images as real."""
    assert isinstance(loss, GANLoss) and loss.name == option
    high, low = torch.full((4,), 3.0), torch.full((4,), -3.0)
    if option == "categorical":  # K+1 = 3 outputs: classes 0 and 1, the last one "generated"
        cls, gen = torch.zeros(4, dtype=torch.long), torch.full((4,), 2, dtype=torch.long)
        as_real, as_fake = F.one_hot(cls, 3) * 6.0 - 3.0, F.one_hot(gen, 3) * 6.0 - 3.0
        told = loss.discriminator(as_real, as_fake, cls, gen)
        fooled = loss.discriminator(as_fake, as_real, cls, gen)
        g_fooling, g_caught = loss.generator(as_real, cls), loss.generator(as_fake, cls)
    else:
        told, fooled = loss.discriminator(high, low), loss.discriminator(low, high)
        g_fooling, g_caught = loss.generator(high), loss.generator(low)
    assert float(told) < float(fooled) and float(g_fooling) < float(g_caught)


@pytest.mark.parametrize("optimizer", ["adam", "adam_wgan_gp", "adam_pggan"])
def test_fused_adam_is_a_config_key(optimizer, tmp_path):
    cfg = compose_config([f"optimizer={optimizer}", "optimizer.discriminator.fused=true"], tmp_path)
    build_datamodule(cfg)  # publishes channels and classes into cfg, as a run does
    opt_d, opt_g = build_model(cfg).configure_optimizers()[0]
    assert opt_d.defaults["fused"] is True and opt_g.defaults["fused"] is None  # null: torch's choice
