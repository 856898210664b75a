"""Mixed precision: the module's D and G updates are exactly those of a plain autocast loop.

The reference is written here, independently of the module: the module's initial nets copied,
the objectives written out with ``torch.nn.functional``, optimisers from ``torch.optim``, the
latents and labels drawn from torch's generator in the order of the algorithm (per critic update:
latents, then labels; the gradient penalty's mixing weights after D's two forward passes), and
autocast around each update's forward passes and loss only."""
from __future__ import annotations

import copy
from contextlib import nullcontext
from typing import Callable, ContextManager

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from gan_lab import bench
from gan_lab.build import build_trainer, serve_draws
from tests.conftest import refused

BATCHES, BATCH, SIZE = 3, 8, 16


def batches(draws: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The training batches: ``draws`` draws of ``BATCH`` images each (``model.fresh_reals``)."""
    g = torch.Generator().manual_seed(1)
    return [(torch.randint(0, 256, (draws * BATCH, 3, SIZE, SIZE), dtype=torch.uint8, generator=g),
             torch.randint(0, 10, (draws * BATCH,), generator=g)) for _ in range(BATCHES)]


def draws_of(cfg) -> int:
    """Draws of real images per batch: one per critic update with ``model.fresh_reals``."""
    return cfg.model.n_critic if cfg.model.get("fresh_reals", False) else 1


def bench_cfg(model: str, precision: str, *overrides: str):
    args = bench.parse_args(["train", "--model", model, "--image-size", str(SIZE), "--batch-size", str(BATCH),
                             "--precision", precision, "--device", "cpu", "--output", "-", "noise.latent_dim=8",
                             *overrides])
    cfg = bench.bench_config(args)
    bench.one_epoch(cfg)  # as the bench's Lightning run (build_trainer gets no loggers)
    return cfg


def lightning_fit(cfg, model) -> None:
    feed = bench.SyntheticImages(image_size=SIZE, batch_size=BATCH)
    serve_draws(model, feed)
    feed.train_dataloader = lambda: DataLoader(batches(draws_of(cfg)), batch_size=None)
    feed.setup = lambda stage=None: None
    torch.manual_seed(7)
    build_trainer(cfg, [], []).fit(model, datamodule=feed)


def adam(params, node) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=node.lr, betas=tuple(node.betas))


def plain_gan_loop(cfg, generator: nn.Module, discriminator: nn.Module) -> None:
    """The GAN algorithm as a plain PyTorch loop: per batch ``n_critic`` D updates (the fakes of the
    last one keep G's graph for the first G update), then ``n_gen`` G updates with D frozen. With
    ``model.fresh_reals`` the batch holds ``n_critic`` draws of ``BATCH`` real images, the i-th for
    the i-th D update, and the G updates draw as many latents as one draw has images."""
    n_critic, n_gen, latent_dim = cfg.model.n_critic, cfg.model.n_gen, cfg.noise.latent_dim
    conditional = "num_classes" in cfg.model
    wasserstein = cfg.loss.name == "wasserstein"
    gp_weight = cfg.model.get("gp_weight", 0.0)
    autocast: Callable[[], ContextManager] = nullcontext
    if cfg.trainer.precision == "bf16-mixed":
        autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    opt_d, opt_g = adam(discriminator.parameters(), cfg.optimizer.discriminator), \
        adam(generator.parameters(), cfg.optimizer.generator)

    def G(z, y):
        return generator(z, y) if conditional else generator(z)

    def D(x, y):
        return discriminator(x, y) if conditional else discriminator(x)

    def draw(n):
        z = torch.randn(n, latent_dim)
        return z, (torch.randint(0, cfg.data.num_classes, (n,)) if conditional else None)

    def gradient_penalty(real, fake, y):
        eps = torch.rand(real.shape[0], 1, 1, 1)
        mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(D(mixed, y).sum(), mixed, create_graph=True)
        return ((grad.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()

    torch.manual_seed(7)
    fresh = draws_of(cfg) > 1
    for images, labels_all in DataLoader(batches(draws_of(cfg)), batch_size=None):  # the loader draws a seed, as in fit
        real_all = images.float() / 127.5 - 1
        real, labels = real_all, labels_all
        for i in range(n_critic):
            if fresh:
                real, labels = real_all[i * BATCH:(i + 1) * BATCH], labels_all[i * BATCH:(i + 1) * BATCH]
            n = real.shape[0]
            z, y = draw(n)
            with torch.set_grad_enabled(i == n_critic - 1), autocast():
                fake = G(z, y)
            with autocast():
                real_logits, fake_logits = D(real, labels), D(fake.detach(), y)
                if wasserstein:
                    d_loss = fake_logits.mean() - real_logits.mean()
                    if gp_weight:
                        d_loss = d_loss + gp_weight * gradient_penalty(real, fake.detach(), labels)
                else:
                    d_loss = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits)) + \
                        F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        for j in range(n_gen):
            if j > 0:
                z, y = draw(n)
                with autocast():
                    fake = G(z, y)
            discriminator.requires_grad_(False)
            with autocast():
                logits = D(fake, y)
                g_loss = -logits.mean() if wasserstein else \
                    F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            discriminator.requires_grad_(True)
            opt_g.step()


@pytest.mark.parametrize("model,precision,overrides", [
    ("dcgan", "bf16-mixed", ["model.generator.width=8", "model.discriminator.width=8"]),
    ("dcgan", "bf16-mixed", ["model.generator.width=8", "model.discriminator.width=8", "model.n_critic=2"]),
    ("wgan_gp", "bf16-mixed", ["model.generator.width=8", "model.discriminator.width=8", "model.n_critic=3"]),
    ("wgan_gp", "32", ["model.generator.width=8", "model.discriminator.width=8", "model.n_critic=3",
                       "model.fresh_reals=false"]),
    ("dcgan", "32", ["model.generator.width=8", "model.discriminator.width=8", "model.n_critic=2",
                     "model.fresh_reals=true"]),
    ("cdcgan", "bf16-mixed", ["model.generator.width=8", "model.discriminator.width=8"]),
    ("dcgan", "32", ["model.generator.width=8", "model.discriminator.width=8", "model.n_critic=2", "model.n_gen=2"]),
])
def test_module_updates_equal_plain_autocast_loop(model, precision, overrides):
    cfg = bench_cfg(model, precision, *overrides)
    module = bench.fresh_model(cfg, torch.device("cpu"))
    generator, discriminator = copy.deepcopy(module.generator), copy.deepcopy(module.discriminator)
    start = {k: v.clone() for k, v in module.state_dict().items()}
    lightning_fit(cfg, module)
    plain_gan_loop(cfg, generator, discriminator)
    ours = module.state_dict()
    plain = {**{f"generator.{k}": v for k, v in generator.state_dict().items()},
             **{f"discriminator.{k}": v for k, v in discriminator.state_dict().items()}}
    assert set(plain) <= set(ours)
    different = [k for k in plain if not torch.equal(ours[k], plain[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
    assert any(not torch.equal(start[k], ours[k]) for k in plain if k.endswith("weight")), "nothing trained"


@pytest.mark.parametrize("model", ["artgan", "pggan", "cgan_mlp"])
def test_every_variant_trains_in_bf16_mixed(make_cfg, tmp_path, model):
    """The variants with their own loops (ArtGAN's pre-training and extra G step, PGGAN's growth and
    EMA, the dense cGAN) train under per-phase autocast: G and D updated, losses and weights finite."""
    import json

    from tests.test_host_sync import MODELS

    from gan_lab.run import train

    extra = ["model.pretrain_epochs=1", "model.extra_g_when=d_loss", "model.extra_g_threshold=1e9"] \
        if model == "artgan" else []
    cfg = make_cfg(*MODELS[model], *extra, "trainer.precision=bf16-mixed", "trainer.max_epochs=2",
                   "trainer.limit_train_batches=3", "trainer.log_every_n_steps=1")
    train(cfg)
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["status"] == "completed" and summary["batches_seen"] == 6
    losses = {k: v for k, v in summary["final"].items() if k.endswith("_loss")}
    assert {"train/d_loss", "train/g_loss"} <= set(losses)
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    if model == "artgan":  # the extra generator update ran under autocast too
        assert summary["final"]["train/extra_g_updates"] > 0
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())


def test_float16_mixed_precision_on_a_cpu_is_refused_before_training(make_cfg):
    cfg = make_cfg("trainer.precision=16-mixed", "trainer.accelerator=cpu")
    with refused("trainer.precision=16-mixed", "GPU", "trainer.precision=bf16-mixed"):
        build_trainer(cfg, [], [])


@pytest.mark.parametrize("alias, precision", [("bf16", "bf16-mixed"), ("32", "32-true")])
def test_lightnings_short_names_get_gan_labs_precision(make_cfg, alias, precision):
    """``bf16`` is ``bf16-mixed``, autocast per phase (Lightning's own plugin would autocast the whole
    step, backward and optimizer steps included)."""
    from gan_lab.precision import PhaseMixedPrecision

    trainer = build_trainer(make_cfg(f"trainer.precision={alias}", "trainer.accelerator=cpu"), [], [])
    assert trainer.precision == precision
    assert isinstance(trainer.strategy.precision_plugin, PhaseMixedPrecision) == (precision == "bf16-mixed")


@pytest.mark.parametrize("precision, named", [
    ("bf16-true", ("trainer.precision=bf16-true", "bfloat16")), ("16-true", ("trainer.precision=16-true", "float16")),
    ("64", ("trainer.precision=64", "float64")), ("transformer-engine", ("trainer.precision=transformer-engine",)),
    ("16", ("trainer.precision=16-mixed", "GPU"))])
def test_precisions_the_models_cannot_train_in_are_refused_in_one_sentence(make_cfg, precision, named):
    cfg = make_cfg(f"trainer.precision={precision}", "trainer.accelerator=cpu")
    with refused(*named) as info:
        build_trainer(cfg, [], [])
    assert str(info.value).count(". ") == 0 and "bf16-mixed" in str(info.value)


def test_mixed_precision_plugin_keeps_the_configured_plugins(make_cfg):
    from lightning.pytorch.plugins.precision import MixedPrecision

    from gan_lab.checkpoint_io import AtomicCheckpointIO

    trainer = build_trainer(make_cfg("trainer.precision=bf16-mixed", "trainer.accelerator=cpu"), [], [])
    plugin = trainer.strategy.precision_plugin
    assert isinstance(plugin, MixedPrecision) and plugin.device == "cpu" and trainer.precision == "bf16-mixed"
    # backward and optimizer steps stay outside autocast: the step context opens no autocast region
    with plugin.train_step_context():
        assert not torch.is_autocast_enabled("cpu")
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
