"""WGAN with weight clipping: the presets of model=wgan, the clamp after every critic update (against
the unclipped update clamped by hand), the refusal of a bad clip, and a real training run."""
from __future__ import annotations

import csv
import json
import logging

import pytest
import torch

from gan_lab.build import build_datamodule, build_model
from gan_lab.errors import UserError
from gan_lab.run import train
from tests.conftest import refused

NARROW = ["model.generator.width=8", "model.discriminator.width=8"]


def critic_parameters(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The critic's parameters in a state dict (its BatchNorm running statistics are buffers: not clipped)."""
    return {k: v for k, v in state.items() if k.startswith("discriminator.")
            and not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def test_model_wgan_presets_the_papers_settings(make_cfg):
    cfg = make_cfg("model=wgan", *NARROW)
    build_datamodule(cfg)
    model = build_model(cfg)
    assert type(model).__name__ == "WGAN"
    assert model.loss.name == "wasserstein" and model.n_critic == 5 and model.weight_clip == 0.01
    assert model.critic_warmup == {"updates": 100, "first": 25, "every": 500} and model.fresh_reals
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.discriminator.modules())
    (opt_d, opt_g), _ = model.configure_optimizers()
    for opt in (opt_d, opt_g):
        assert isinstance(opt, torch.optim.RMSprop) and opt.param_groups[0]["lr"] == 5e-5
    cfg = make_cfg("model=wgan", "optimizer=adam", "model.weight_clip=0.05", "model.n_critic=2")
    assert cfg.optimizer.discriminator._target_ == "torch.optim.Adam"
    assert cfg.model.weight_clip == 0.05 and cfg.model.n_critic == 2


def models_with_and_without_clip(make_cfg, clip: float):
    out = []
    for value in (clip, "null"):
        cfg = make_cfg("model=wgan", *NARROW, "data.image_size=16", f"model.weight_clip={value}")
        build_datamodule(cfg)
        torch.manual_seed(0)
        out.append(build_model(cfg))
    return out


@pytest.mark.parametrize("clip", [0.01, 0.05])
def test_a_critic_update_is_the_unclipped_update_clamped(make_cfg, clip):
    clipped, unclipped = models_with_and_without_clip(make_cfg, clip)
    assert all(torch.equal(a, b) for a, b in zip(clipped.state_dict().values(), unclipped.state_dict().values()))
    real, fake = torch.rand(8, 1, 16, 16) * 2 - 1, torch.rand(8, 1, 16, 16) * 2 - 1  # digits: one channel
    labels = torch.zeros(8, dtype=torch.long)
    for model in (clipped, unclipped):
        opt = torch.optim.RMSprop(model.discriminator.parameters(), lr=5e-5)
        terms = model.discriminator_update(opt, real, labels, fake, labels, torch.Tensor.backward)
        assert terms["wasserstein"] == pytest.approx((terms["d_real"] - terms["d_fake"]).item())
    after, before = critic_parameters(clipped.state_dict()), critic_parameters(unclipped.state_dict())
    for name in after:
        assert torch.equal(after[name], before[name].clamp(-clip, clip)), name
    # the clip acted (DCGAN's initial weights, N(0, 0.02), reach beyond it), and only on the critic
    assert any(v.abs().max() > clip for v in before.values())
    assert max(v.abs().max() for v in after.values()) == pytest.approx(clip)
    gen = {k: v for k, v in clipped.state_dict().items() if k.startswith("generator.")}
    assert any(v.is_floating_point() and v.abs().max() > clip for v in gen.values())
    # buffers are not parameters: BatchNorm's running variance stays near 1
    assert any(k.endswith("running_var") and v.max() > 0.5 for k, v in clipped.state_dict().items()
               if k.startswith("discriminator."))


@pytest.mark.parametrize("value", ["0", "-0.01"])
def test_a_weight_clip_that_is_not_positive_is_refused(make_cfg, value):
    cfg = make_cfg("model=wgan", *NARROW, f"model.weight_clip={value}")
    build_datamodule(cfg)
    with pytest.raises(UserError, match=rf"^model\.weight_clip={value} must be "):
        build_model(cfg)


def test_wgan_trains_with_the_critic_inside_the_clip(make_cfg, tmp_path):
    cfg = make_cfg("model=wgan", *NARROW, "trainer.max_epochs=1", "model.critic_warmup=null")
    train(cfg)
    run = tmp_path / "run"
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "completed"
    assert summary["optimizer_steps"] == summary["batches_seen"] * (5 + 1)
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    params = critic_parameters(state)
    assert params and max(v.abs().max().item() for v in params.values()) == pytest.approx(0.01)
    with open(run / "metrics.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("train/wasserstein")]
    assert rows
    for r in rows:
        assert float(r["train/wasserstein"]) == pytest.approx(float(r["train/d_real"]) - float(r["train/d_fake"]),
                                                             abs=1e-6)


@pytest.mark.parametrize("overrides, warned", [
    (["model=dcgan", "loss=wasserstein"], True),
    (["model=dcgan", "loss=wasserstein", "model.discriminator.spectral_norm=true"], False),
    (["model=wgan"], False),
    (["model=wgan", "model.weight_clip=null"], True),
    (["model=wgan_gp"], False),
    (["model=wgan_gp", "model.gp_weight=0"], True),
    (["model=dcgan", "loss=hinge"], False),
])
def test_a_wasserstein_critic_without_a_lipschitz_constraint_is_warned_of(make_cfg, caplog, overrides, warned):
    cfg = make_cfg(*overrides, *NARROW, "trainer.max_epochs=1", "trainer.limit_train_batches=1")
    with caplog.at_level(logging.WARNING, logger="gan_lab"):
        train(cfg)
    assert ("loss=wasserstein with nothing keeping D Lipschitz" in caplog.text) == warned


#: a short warm-up schedule: 10 critic updates (two batches of 5) before each of the first 2 generator
#: updates and before every 4th
SHORT_WARMUP = ["model.critic_warmup.updates=10", "model.critic_warmup.first=2", "model.critic_warmup.every=4"]


def logged_rows(run) -> list[dict[str, str]]:
    with open(run / "metrics.csv") as fh:
        return [r for r in csv.DictReader(fh) if r.get("train/d_loss")]


def test_the_critic_warmup_follows_the_schedule_of_the_papers_code(make_cfg, tmp_path):
    """Batches of 5 critic updates; generator updates 1 and 2 (the first two) and 5 (after the 4th)
    each wait for 10 critic updates, i.e. two batches, the first of which makes no generator update."""
    train(make_cfg("model=wgan", *NARROW, *SHORT_WARMUP, "data.batch_size=16", "trainer.max_epochs=1",
                   "trainer.limit_train_batches=13",
                   "trainer.log_every_n_steps=1"))
    run = tmp_path / "run"
    rows = logged_rows(run)
    assert [int(float(r["train/generator_updates"])) for r in rows] == [0, 1, 1, 2, 3, 4, 4, 5, 6, 7, 8, 8, 9]
    assert [bool(r["train/g_loss"]) for r in rows] == [False, True, False, True, True, True, False, True, True,
                                                       True, True, False, True]
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["optimizer_steps"] == 13 * 5 + 9
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["wgan"] == {"generator_updates_done": 9, "critic_updates_waited": 0}


def test_a_run_resumed_inside_a_warmup_equals_one_without_the_break(make_cfg, tmp_path):
    """3 + 3 batches == 6 in one go, the break after batch 3: inside the wait of a warm-up generator
    update, which must go on after the resume (5 critic updates already waited)."""
    common = ["model=wgan", *NARROW, *SHORT_WARMUP, "trainer.limit_train_batches=3", "logger=none",
              "callbacks.sample_grid=null", "callbacks.training_curves=null"]
    train(make_cfg(*common, "trainer.max_epochs=2", run_dir=tmp_path / "full"))
    train(make_cfg(*common, "trainer.max_epochs=1", run_dir=tmp_path / "half"))
    half = torch.load(tmp_path / "half" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert half["wgan"] == {"generator_updates_done": 1, "critic_updates_waited": 5}
    train(make_cfg(*common, "trainer.max_epochs=2", f"ckpt_path={tmp_path / 'half' / 'checkpoints' / 'last.ckpt'}",
                   run_dir=tmp_path / "resumed"))
    full, resumed = (torch.load(tmp_path / name / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
                     for name in ("full", "resumed"))
    assert full["wgan"] == resumed["wgan"] == {"generator_updates_done": 4, "critic_updates_waited": 0}
    assert all(torch.equal(full["state_dict"][k], resumed["state_dict"][k]) for k in full["state_dict"])


@pytest.mark.parametrize("value, named", [
    ("{updates:0,first:25,every:500}", ("model.critic_warmup.updates=0", ">= 1")),
    ("{updates:100,first:-1,every:500}", ("model.critic_warmup.first=-1", ">= 0")),
    ("7", ("model.critic_warmup=7", "model.critic_warmup={key:value}")),
    ("{updates:100,first:25,every:0}", ("model.critic_warmup.every=0", ">= 1")),
])
def test_a_bad_critic_warmup_is_refused(make_cfg, value, named):
    cfg = make_cfg("model=wgan", *NARROW, f"model.critic_warmup={value}")
    build_datamodule(cfg)
    with refused(*named):
        build_model(cfg)


@pytest.mark.parametrize("overrides, warned", [
    ([], "this run trains 6 batches, so it makes 0 generator updates"),       # trainer=debug: 2 epochs of 3
    (["model.critic_warmup.updates=20", "model.critic_warmup.first=2"], "so it makes 1 generator update;"),
    (SHORT_WARMUP, None),                                                      # done within the 6 batches
    (["model.critic_warmup=null"], None),
    (["model.critic_warmup.updates=5"], None),                                 # 5 per batch: nothing waits
])
def test_a_run_too_short_for_the_warmup_is_warned_of(make_cfg, tmp_path, caplog, overrides, warned):
    with caplog.at_level(logging.WARNING, logger="gan_lab"):
        train(make_cfg("model=wgan", *NARROW, "data.image_size=16", *overrides))
    messages = [r.getMessage() for r in caplog.records if "model.critic_warmup" in r.getMessage()]
    if warned is None:
        assert messages == []
        return
    assert len(messages) == 1 and warned in messages[0], messages
    made = json.loads((tmp_path / "run" / "metrics.json").read_text())["final"]["train/generator_updates"]
    assert made == int(warned.split("makes ")[1].split()[0])  # the warning's count is what the run made


def test_a_checkpoint_without_the_warmup_state_counts_a_generator_update_per_batch(make_cfg):
    """A checkpoint written before the warm-up existed made n_gen generator updates in every batch: a
    run resumed from it is past the first 25 (no warm-up again at 30 batches)."""
    cfg = make_cfg("model=wgan", *NARROW)
    build_datamodule(cfg)
    model = build_model(cfg)
    checkpoint = {"state_dict": model.state_dict(), "gan_lab": {"batches_seen": 30, "images_seen": 9600}}
    model.on_load_checkpoint(checkpoint)
    assert (model.batches_seen, model.generator_updates_done, model.critic_updates_waited) == (30, 30, 0)
    assert not model.warming_up()
