"""``model.fresh_reals``: each of a batch's ``n_critic`` critic updates takes its own draw of real
images, as the WGAN and WGAN-GP algorithms draw them, and the DataModule serves that many draws a batch.
``model.fresh_fakes``: the first generator update generates its own images instead of taking the last
critic update's.

What D and G were given is recorded on the way into ``d_step`` and ``g_step`` (the real objectives
run unchanged); the runs are real trainings on the bundled digits."""
from __future__ import annotations

import json

import pytest
import torch
from torch import Tensor

from gan_lab.build import build_datamodule, build_model, build_trainer, serve_draws
from gan_lab.run import train
from tests.conftest import refused

NARROW = ["model.generator.width=4", "model.discriminator.width=4", "data.image_size=16"]
BATCH = 8


def recorded(model) -> dict[str, list]:
    """Record the real images, labels and fake batch sizes every ``d_step`` and ``g_step`` of ``model`` gets."""
    seen: dict[str, list] = {"d_real": [], "d_labels": [], "d_fakes": [], "g_real": [], "g_fakes": []}
    d_step, g_step = model.d_step, model.g_step

    def recording_d_step(real, labels, fake, fake_labels):
        seen["d_real"].append(real.clone())
        seen["d_labels"].append(labels.clone())
        seen["d_fakes"].append(None if fake is None else fake.shape[0])
        return d_step(real, labels, fake, fake_labels)

    def recording_g_step(fake, fake_labels, real, labels):
        seen["g_real"].append(real.clone())
        seen["g_fakes"].append(fake.shape[0])
        return g_step(fake, fake_labels, real, labels)

    model.d_step, model.g_step = recording_d_step, recording_g_step
    return seen


def one_batch(make_cfg, model: str, n_critic: int, *extra: str) -> tuple[dict[str, list], Tensor, Tensor]:
    """One batch of ``model``'s updates on ``draws_per_batch`` draws of ``BATCH`` real images, recorded."""
    cfg = make_cfg(f"model={model}", *NARROW, f"model.n_critic={n_critic}", *extra)
    build_datamodule(cfg, setup=False)
    torch.manual_seed(0)
    gan = build_model(cfg)
    g = torch.Generator().manual_seed(1)
    n = BATCH * gan.draws_per_batch
    real = torch.rand(n, 1, 16, 16, generator=g) * 2 - 1
    labels = torch.randint(0, 10, (n,), generator=g)
    seen = recorded(gan)
    opt_d, opt_g = (torch.optim.Adam(p, lr=1e-4) for p in (gan.discriminator.parameters(),
                                                            gan.generator.parameters()))
    gan.updates(real, labels, opt_d, opt_g, Tensor.backward)
    return seen, real, labels


@pytest.mark.parametrize("model,n_critic,extra", [("wgan_gp", 3, []), ("wgan", 2, ["model.critic_warmup=null"]),
                                                  ("cdcgan", 3, [])])
def test_each_critic_update_takes_its_own_draw_in_order(make_cfg, model, n_critic, extra):
    seen, real, labels = one_batch(make_cfg, model, n_critic, "model.fresh_reals=true", *extra)
    assert real.shape[0] == n_critic * BATCH
    assert len(seen["d_real"]) == n_critic
    for i in range(n_critic):
        rows = slice(i * BATCH, (i + 1) * BATCH)
        assert torch.equal(seen["d_real"][i], real[rows]), f"critic update {i} did not get draw {i}"
        assert torch.equal(seen["d_labels"][i], labels[rows])
        assert seen["d_fakes"][i] == BATCH  # as many fakes as one draw has real images
    # the generator update takes the last draw (what a term comparing with real images sees) and
    # as many fakes as a draw has images
    assert len(seen["g_real"]) == 1 and torch.equal(seen["g_real"][0], real[-BATCH:])
    assert seen["g_fakes"] == [BATCH]


def test_without_fresh_reals_every_critic_update_takes_the_whole_batch(make_cfg):
    seen, real, _ = one_batch(make_cfg, "wgan_gp", 3, "model.fresh_reals=false")
    assert real.shape[0] == BATCH
    assert len(seen["d_real"]) == 3 and all(torch.equal(r, real) for r in seen["d_real"])
    assert seen["d_fakes"] == [BATCH] * 3 and seen["g_fakes"] == [BATCH]


def test_artgan_pretraining_gives_each_draw_its_own_update(make_cfg):
    """While pre-training (D alone on real images) a batch of two draws gets two D updates, one per draw."""
    seen, real, labels = one_batch(make_cfg, "artgan", 2, "model.fresh_reals=true", "model.pretrain_epochs=1",
                                   "model.samples_per_class=2")
    assert len(seen["d_real"]) == 2 and seen["d_fakes"] == [None, None]
    assert torch.equal(seen["d_real"][0], real[:BATCH]) and torch.equal(seen["d_real"][1], real[BATCH:])
    assert torch.equal(seen["d_labels"][1], labels[BATCH:])
    assert seen["g_real"] == []  # no generator update while pre-training


def test_the_presets(make_cfg):
    for model, fresh in (("wgan", True), ("wgan_gp", True), ("dcgan", False), ("pggan", False)):
        assert make_cfg(f"model={model}").model.fresh_reals is fresh, model
    # the Pokemon study's WGAN-GP shares each batch among its critic updates (see its README)
    assert make_cfg("experiment=pokemon_wgan_gp128").model.fresh_reals is False


def run_summary(make_cfg, tmp_path, name: str, *extra: str) -> dict:
    run_dir = tmp_path / name
    train(make_cfg("model=wgan_gp", *NARROW, "data.batch_size=16", "data.subset=320", "model.n_critic=2",
                   "trainer.max_epochs=1", "trainer.limit_train_batches=null", "callbacks.sample_grid=null",
                   "callbacks.training_curves=null", "logger=none", *extra, run_dir=run_dir))
    return json.loads((run_dir / "metrics.json").read_text())


def test_a_run_is_served_one_draw_per_critic_update(make_cfg, tmp_path):
    """320 training images, batches of 16, 2 critic updates: with fresh reals an epoch is 10 batches of
    2 draws (every image once), without it 20 batches whose images each critic update sees."""
    fresh = run_summary(make_cfg, tmp_path, "fresh", "model.fresh_reals=true")
    shared = run_summary(make_cfg, tmp_path, "shared", "model.fresh_reals=false")
    assert (fresh["batches_seen"], fresh["images_seen"]) == (10, 320)
    assert (shared["batches_seen"], shared["images_seen"]) == (20, 320)
    assert fresh["status"] == shared["status"] == "completed"


def test_the_datamodule_serves_the_draws(make_cfg):
    cfg = make_cfg("model=wgan_gp", *NARROW, "data.batch_size=16", "model.n_critic=3")
    dm = build_datamodule(cfg, setup=False)
    serve_draws(build_model(cfg), dm)
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape[0] == labels.shape[0] == 48 and dm.train_batch_size == 48 and dm.batch_size == 16


def test_fresh_reals_with_an_incomplete_last_batch_is_refused(make_cfg, tmp_path):
    cfg = make_cfg("model=wgan_gp", *NARROW, "data.drop_last=false")
    with refused("model.fresh_reals=true", "data.drop_last=true", "5 critic"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before training


def test_more_draws_than_the_data_holds_is_refused(make_cfg):
    cfg = make_cfg("model=wgan_gp", *NARROW, "data.subset=100", "data.batch_size=32")
    with refused("data.batch_size=32", "model.fresh_reals", "data.batch_size<=20"):
        train(cfg)


def test_a_value_that_is_not_a_boolean_is_refused(make_cfg):
    cfg = make_cfg("model=wgan_gp", *NARROW, "model.fresh_reals=sometimes")
    build_datamodule(cfg, setup=False)
    with refused("model.fresh_reals='sometimes'", "true", "false"):
        build_model(cfg)


def test_a_datamodule_that_was_not_told_the_draws_is_refused_at_fit_start(make_cfg):
    """Fitting a model with fresh reals on a DataModule that serves one draw a batch would silently
    split each batch into smaller ones: refused in one sentence, before the first batch."""
    cfg = make_cfg("model=wgan_gp", *NARROW)
    dm = build_datamodule(cfg)
    model = build_model(cfg)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with refused("model.fresh_reals=true", "5 draws", "gan_lab.build.serve_draws"):
        build_trainer(cfg, [], []).fit(model, datamodule=dm)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in start.items())  # nothing trained


def fakes_recorded(model) -> dict[str, list]:
    """Record the generated images and their labels every ``d_step`` and ``g_step`` of ``model`` gets."""
    seen: dict[str, list] = {"d": [], "g": []}
    d_step, g_step = model.d_step, model.g_step

    def recording_d_step(real, labels, fake, fake_labels):
        seen["d"].append((fake.detach().clone(), fake_labels.clone()))
        return d_step(real, labels, fake, fake_labels)

    def recording_g_step(fake, fake_labels, real, labels):
        seen["g"].append((fake.detach().clone(), fake_labels.clone()))
        return g_step(fake, fake_labels, real, labels)

    model.d_step, model.g_step = recording_d_step, recording_g_step
    return seen


@pytest.mark.parametrize("model,n_critic,n_gen", [("dcgan", 1, 1), ("artgan", 2, 1), ("cdcgan", 1, 2)])
@pytest.mark.parametrize("fresh", [False, True])
def test_fresh_fakes_gives_the_first_generator_update_its_own_generated_images(make_cfg, model, n_critic, n_gen,
                                                                              fresh):
    cfg = make_cfg(f"model={model}", *NARROW, f"model.n_critic={n_critic}", f"model.n_gen={n_gen}",
                   f"model.fresh_fakes={str(fresh).lower()}")
    build_datamodule(cfg, setup=False)
    torch.manual_seed(0)
    gan = build_model(cfg)
    seen = fakes_recorded(gan)
    g = torch.Generator().manual_seed(1)
    real, labels = torch.rand(BATCH, 1, 16, 16, generator=g) * 2 - 1, torch.randint(0, 10, (BATCH,), generator=g)
    opt_d, opt_g = (torch.optim.Adam(p, lr=1e-4) for p in (gan.discriminator.parameters(),
                                                            gan.generator.parameters()))
    gan.updates(real, labels, opt_d, opt_g, Tensor.backward)
    assert len(seen["d"]) == n_critic and len(seen["g"]) == n_gen
    last_d, first_g = seen["d"][-1], seen["g"][0]
    assert first_g[0].shape == last_d[0].shape
    # with the default, the critic's last images, labels included; fresh: other images (and labels)
    assert torch.equal(first_g[0], last_d[0]) is not fresh
    if model != "dcgan":
        assert torch.equal(first_g[1], last_d[1]) is not fresh
    if n_gen > 1:  # the later generator updates generate their own either way
        assert not torch.equal(seen["g"][1][0], first_g[0])


def test_fresh_fakes_must_be_a_boolean(make_cfg):
    cfg = make_cfg("model=dcgan", *NARROW, "model.fresh_fakes=3")
    build_datamodule(cfg, setup=False)
    with refused("model.fresh_fakes=3", "true", "false"):
        build_model(cfg)
