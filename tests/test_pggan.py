"""Progressive GAN: equalized-LR layers, fade-in equivalences, the growth schedule and the growth
callback that drives the model's phase, training with per-resolution batch sizes (epochs end where the
batch size changes), resume mid-phase, loading for sampling without the callback, and the EMA generator."""
from __future__ import annotations

import csv
import json
import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gan_lab.build import build_callbacks, build_datamodule, build_model, instantiate_checked
from gan_lab.callbacks.curves import TrainingCurves
from gan_lab.callbacks.growth import Growth
from gan_lab.errors import TrainingInterrupted
from gan_lab.models import GrowthSchedule
from gan_lab.nets.progressive import (EqualizedConv2d, EqualizedLinear, MinibatchStddev, PixelNorm,
                                      ProgressiveDiscriminator, ProgressiveGenerator)
from gan_lab.run import train
from gan_lab.runs import load_run
from tests.conftest import NARROW_NETS, refused
from tests.test_evaluate import write_run_config

# narrow nets (16 feature maps at most) and a schedule of a few batches per phase on 32x32 digits
TINY_PGGAN = [
    "model=pggan",
    "model.generator.fmap_base=128", "model.generator.fmap_max=16",
    "model.discriminator.fmap_base=128", "model.discriminator.fmap_max=16",
    "model.num_samples=16",
    "trainer.limit_train_batches=4",
    "callbacks.growth.schedule.stages=["
    "{resolution:4,fade_images:0,stable_images:32,batch_size:8},"
    "{resolution:8,fade_images:32,stable_images:32,batch_size:8},"
    "{resolution:16,fade_images:32,stable_images:32,batch_size:4},"
    "{resolution:32,fade_images:32,stable_images:16,batch_size:4}]",
]


def stages(*rows):
    return [dict(zip(("resolution", "fade_images", "stable_images", "batch_size"), r)) for r in rows]


def rows(run_dir) -> list[dict[str, float]]:
    with open(run_dir / "metrics.csv") as fh:
        return [{k: float(v) for k, v in r.items() if v} for r in csv.DictReader(fh) if r.get("train/alpha")]


# --- layers -----------------------------------------------------------------------------------


def test_equalized_layers_scale_weights_by_he_constant_at_run_time():
    conv = EqualizedConv2d(8, 4, 3)
    assert conv.scale == pytest.approx(math.sqrt(2) / math.sqrt(8 * 3 * 3))
    assert conv.weight.std().item() == pytest.approx(1.0, abs=0.15)  # stored weights are N(0, 1)
    x = torch.randn(2, 8, 5, 5)
    expected = F.conv2d(x, conv.weight * conv.scale, conv.bias, padding=1)
    assert torch.allclose(conv(x), expected)
    # the gradient on the stored weight carries the same constant: Adam sees one scale per layer
    conv(x).sum().backward()
    w_eff = (conv.weight.detach() * conv.scale).requires_grad_(True)
    F.conv2d(x, w_eff, conv.bias.detach(), padding=1).sum().backward()
    assert torch.allclose(conv.weight.grad, w_eff.grad * conv.scale, atol=1e-5)

    lin = EqualizedLinear(32, 5, gain=1.0)
    assert lin.scale == pytest.approx(1 / math.sqrt(32))
    x = torch.randn(3, 32)
    assert torch.allclose(lin(x), x @ (lin.weight * lin.scale).T + lin.bias)
    assert EqualizedConv2d(16, 3, 1, gain=1.0).scale == pytest.approx(1 / 4)


def test_equalized_conv_keeps_activations_at_unit_scale():
    conv = EqualizedConv2d(64, 64, 3)
    x = torch.randn(8, 64, 8, 8)
    y = F.leaky_relu(conv(x), 0.2)
    assert 0.5 < y.pow(2).mean().item() < 2.0  # He: E[y^2] ~ E[x^2] through conv + ReLU-like


def test_pixel_norm_and_minibatch_stddev():
    x = torch.randn(4, 6, 3, 3) * 5
    assert torch.allclose(PixelNorm()(x).pow(2).mean(dim=1), torch.ones(4, 3, 3), atol=1e-4)
    mb = MinibatchStddev(group_size=4)
    out = mb(x)
    assert out.shape == (4, 7, 3, 3)
    expected = x.std(dim=0, unbiased=False).mean()
    assert torch.allclose(out[:, 6], expected.expand(4, 3, 3), atol=1e-4)
    same = torch.randn(1, 6, 3, 3).repeat(2, 1, 1, 1)  # the study's batch of 2, no variety
    assert mb(same)[:, 6].abs().max() < 1e-3


# --- fade-in ----------------------------------------------------------------------------------


@pytest.fixture
def nets():
    torch.manual_seed(0)
    return (ProgressiveGenerator(8, max_resolution=32, channels=3, fmap_base=64, fmap_max=8),
            ProgressiveDiscriminator(max_resolution=32, channels=3, fmap_base=64, fmap_max=8))


def test_generator_fade_in_blends_the_low_and_high_resolution_paths(nets):
    g, _ = nets
    z = torch.randn(4, 8)
    low = F.interpolate(g(z, 8, 1.0), scale_factor=2, mode="nearest")
    assert g(z, 8).shape == (4, 3, 8, 8) and g(z, 16, 0.0).shape == (4, 3, 16, 16)
    assert torch.allclose(g(z, 16, 0.0), low, atol=1e-6)
    h = g.start(g.input(z).view(4, g.ch0, 4, 4))
    h = g.blocks[1](h)
    high = g.to_rgb[2](g.blocks[2](h))
    assert torch.allclose(g(z, 16, 1.0), high, atol=1e-6)
    assert torch.allclose(g(z, 16, 0.25), 0.75 * low + 0.25 * high, atol=1e-5)
    assert not torch.allclose(low, high)


def test_discriminator_fade_in_blends_the_low_and_high_resolution_paths(nets):
    _, d = nets
    x = torch.randn(4, 3, 16, 16)
    assert torch.allclose(d(x, 16, 0.0), d(F.avg_pool2d(x, 2), 8, 1.0), atol=1e-5)
    high = d.final(d.blocks[1](d.blocks[2](d.from_rgb[2](x)))).view(4)
    assert torch.allclose(d(x, 16, 1.0), high, atol=1e-5)
    assert d(x, 16, 0.5).shape == (4,) and d(torch.randn(4, 3, 4, 4), 4).shape == (4,)
    with refused("resolution=64", "4 and 32"):
        d(torch.randn(2, 3, 64, 64), 64)


def half_resolution_copy(x):
    """Each 2x2 block of ``x`` replaced by its mean (the official code's reshape and tile)."""
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // 2, 2, w // 2, 2).mean(dim=(3, 5), keepdim=True)
    return y.expand(n, c, h // 2, 2, w // 2, 2).reshape(n, c, h, w)


@pytest.mark.parametrize("phase", [(16, 0.0), (16, 0.25), (8, 0.7), (16, 1.0), (4, 1.0)])
def test_critic_sees_real_images_faded_as_the_generators_output_during_a_fade_in(make_cfg, phase):
    """While a resolution fades in, D's real images are ``lerp(x, blocks(x), 1 - alpha)`` (PGGAN's
    ``process_reals``), in every critic update; grown in, as served."""
    resolution, alpha = phase
    cfg = make_cfg(*TINY_PGGAN, "model.n_critic=2")
    build_datamodule(cfg, setup=False)
    torch.manual_seed(0)
    gan = build_model(cfg)
    gan.set_phase(resolution, alpha)
    gan.train()
    seen, d_step = [], gan.d_step
    gan.d_step = lambda real, *rest: seen.append(real.clone()) or d_step(real, *rest)
    real = torch.rand(8, 1, resolution, resolution, generator=torch.Generator().manual_seed(1)) * 2 - 1
    labels = torch.zeros(8, dtype=torch.long)
    opt_d, opt_g = (torch.optim.Adam(p, lr=1e-4) for p in (gan.discriminator.parameters(),
                                                            gan.generator.parameters()))
    gan.updates(real, labels, opt_d, opt_g, torch.Tensor.backward)
    expected = real if alpha == 1.0 else real + (half_resolution_copy(real) - real) * (1 - alpha)
    assert len(seen) == 2
    for got in seen:  # at alpha 0 all 2x2 blocks, as G's output is
        assert torch.allclose(got, expected, atol=1e-6)


# --- the schedule -----------------------------------------------------------------------------


def test_schedule_reaches_the_target_after_the_configured_images():
    s = GrowthSchedule(stages((4, 0, 100, 16), (8, 50, 100, 16), (16, 200, 100, 8), (32, 10, 10, 4)), 16)
    assert [st.resolution for st in s.stages] == [4, 8, 16]  # stages above the target are not used
    assert s.total_images == 100 + 150 + 300
    assert s.phase(0).resolution == 4 and s.phase(0).alpha == 1.0
    assert s.phase(99).resolution == 4
    p = s.phase(100)
    assert (p.resolution, p.alpha, p.batch_size) == (8, 0.0, 16)
    assert s.phase(125).alpha == pytest.approx(0.5)
    assert s.phase(150).alpha == 1.0 and s.phase(249).resolution == 8
    assert (s.phase(250).resolution, s.phase(250).alpha, s.phase(250).batch_size) == (16, 0.0, 8)
    assert s.phase(300).alpha == pytest.approx(0.25)
    assert (s.phase(450).resolution, s.phase(450).alpha) == (16, 1.0)
    assert (s.phase(10 ** 9).resolution, s.phase(10 ** 9).alpha) == (16, 1.0)  # stays at the target
    alphas = [s.phase(i).alpha for i in range(250, 451, 10)]
    assert alphas == sorted(alphas)  # alpha only rises, 0 -> 1


@pytest.mark.parametrize("bad, named", [
    (stages((4, 0, 10, 4), (16, 10, 10, 4)), ("stages[1].resolution=16", "resolution 8")),
    (stages((4, 5, 10, 4), (8, 10, 10, 4)), ("stages[0].fade_images=5", "4x4")),
    (stages((4, 0, 10, 4)), ("callbacks.growth.schedule.stages", "4x4", "data.image_size")),
    (stages((4, 0, -1, 4), (8, 10, 10, 4)), ("stages[0].stable_images=-1",)),
    (stages((4, 0, 10, 0), (8, 10, 10, 4)), ("stages[0].batch_size=0",)),
    ([{"resolution": 4, "fade": 0}], ("stages[0]", "['fade']", "resolution, fade_images, stable_images, batch_size")),
    ([], ("callbacks.growth.schedule.stages", "non-empty")),
])
def test_schedule_is_validated_when_loaded(bad, named):
    with refused(*named):
        GrowthSchedule(bad, 8)


def test_bad_schedule_in_config_is_a_user_error(make_cfg):
    cfg = make_cfg(*TINY_PGGAN, "callbacks.growth.schedule.stages.1.resolution=16")
    with refused("callbacks.growth.schedule.stages[1].resolution=16"):
        build_callbacks(cfg)


# --- the growth callback drives the phase ----------------------------------------------------------


class PhaseSpy(L.Callback):
    """After the growth callback: each trained batch's epoch, size and image side, and the phase after it."""

    def __init__(self):
        self.batches: list[dict] = []
        self._start: dict = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start = {"epoch": trainer.current_epoch, "batch_idx": batch_idx, "size": batch[0].shape[0],
                       "side": batch[0].shape[-1], "phase_before": pl_module.phase}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.batches.append({**self._start, "images_seen": pl_module.images_seen, "phase": pl_module.phase})


def fit_with_growth(cfg, *extra: L.Callback, max_epochs: int):
    """The model trained by a bare Trainer with only the config's growth callback (and ``extra``)."""
    L.seed_everything(0, verbose=False)
    dm = build_datamodule(cfg)
    model = build_model(cfg)
    growth = instantiate_checked(cfg.callbacks.growth, "callbacks.growth")
    trainer = L.Trainer(accelerator="cpu", max_epochs=max_epochs, limit_train_batches=cfg.trainer.limit_train_batches,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[growth, *extra], log_every_n_steps=1)
    trainer.fit(model, datamodule=dm)
    return model, growth, trainer


def test_growth_callback_sets_the_schedules_phase_and_ends_the_epoch_where_the_batch_size_changes(make_cfg):
    # epochs of up to 5 batches; batch size 8 until 96 images, then 4: the change comes after the
    # 2nd batch of epoch 2 (40 + 40 + 16 images), which ends there; epoch 3 has batches of 4
    spy = PhaseSpy()
    cfg = make_cfg(*TINY_PGGAN, "trainer.limit_train_batches=5")
    model, growth, trainer = fit_with_growth(cfg, spy, max_epochs=4)
    schedule = growth.schedule
    for b in spy.batches:  # the phase after every batch is the schedule's for the images seen
        phase = schedule.phase(b["images_seen"])
        assert b["phase"] == (phase.resolution, phase.alpha)
        assert b["side"] == b["phase_before"][0]  # the DataModule served the phase's resolution
    per_epoch = {e: [b["size"] for b in spy.batches if b["epoch"] == e] for e in range(4)}
    assert per_epoch == {0: [8] * 5, 1: [8] * 5, 2: [8] * 2, 3: [4] * 5}
    assert [b["images_seen"] for b in spy.batches if b["epoch"] == 2] == [88, 96]
    assert schedule.phase(96).batch_size == 4 and spy.batches[11]["phase"] == (16, 0.0)
    assert [b["batch_idx"] for b in spy.batches if b["epoch"] == 3] == [0, 1, 2, 3, 4]  # a new DataLoader
    assert trainer.reload_dataloaders_every_n_epochs == 1
    assert model.phase == (16, 0.625) and model.images_seen == 116  # 96 + 5 x 4: 20 of 32 fade-in images


def test_pggan_refuses_to_train_without_the_growth_callback(make_cfg):
    cfg = make_cfg(*TINY_PGGAN, "callbacks.growth=null", "trainer.max_epochs=1")
    with refused("model=pggan", "callbacks.growth=null"):
        train(cfg)


def test_growth_callback_refuses_a_model_without_phases(make_cfg):
    cfg = make_cfg("model=dcgan", *NARROW_NETS["dcgan"], "data.image_size=32")
    build_datamodule(cfg)
    model = build_model(cfg)
    growth = Growth(GrowthSchedule(stages((4, 0, 8, None), (8, 8, 8, None), (16, 8, 8, None), (32, 8, 8, None)), 32))
    with refused("callbacks.growth", "GAN", "set_phase", "model=pggan", "callbacks.growth=null"):
        growth.setup(None, model, "fit")
    # the schedule and the nets must end at the same resolution
    pg_cfg = make_cfg(*TINY_PGGAN)
    build_datamodule(pg_cfg, setup=False)
    pg = build_model(pg_cfg)
    with refused("32", "callbacks.growth.schedule", "16", "data.image_size"):
        Growth(GrowthSchedule(stages((4, 0, 8, None), (8, 8, 8, None), (16, 8, 8, None)), 16)).setup(None, pg, "fit")


# --- training -----------------------------------------------------------------------------------


def test_pggan_grows_to_the_target_resolution(make_cfg, tmp_path):
    # the discriminator refuses images of another size than the phase's resolution, so this run
    # also shows that the DataModule served each resolution
    cfg = make_cfg(*TINY_PGGAN, "trainer.max_epochs=12", "callbacks.ema.half_life_images=100")
    assert cfg.loss.name == "wasserstein" and cfg.optimizer.generator.betas == [0.0, 0.99]
    train(cfg)
    run = tmp_path / "run"
    log = rows(run)
    res = [r["train/resolution"] for r in log]
    assert res == sorted(res) and res[0] == 4 and res[-1] == 32
    # per-resolution batch sizes: 8 images per batch up to 8x8, then 4
    seen = [r["train/images_seen"] for r in log]
    steps = {r: {b - a for a, b, rr in zip([0.0] + seen, seen, res) if rr == r} for r in (4, 8, 16, 32)}
    assert steps == {4: {8.0}, 8: {8.0}, 16: {4.0}, 32: {4.0}}
    # alpha rises 0 -> 1 during each fade-in
    fade16 = [r["train/alpha"] for r in log if r["train/resolution"] == 16]
    assert fade16[0] == 0.0 and fade16 == sorted(fade16) and fade16[-1] == 1.0
    assert all(math.isfinite(r["train/d_loss"]) and r["train/gradient_penalty"] >= 0 for r in log)
    assert all(r["train/drift_penalty"] >= 0 for r in log)
    # sample grids at the current resolution, upscaled for viewing: 4x4 images shown as large as 32x32 ones
    assert Image.open(run / "samples" / "epoch_0000.png").size == Image.open(run / "samples" / "final.png").size
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["final"]["train/resolution"] == 32.0
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["gan_lab"]["phase"] == {"resolution": 32, "alpha": 1.0}
    # the curves have a panel of their own for the growth schedule
    curves = TrainingCurves(str(run / "curves.png"))
    curves.load_state_dict(next(v for k, v in state["callbacks"].items() if k.startswith("TrainingCurves")))
    assert [title for title, _ in curves.panels()] == ["losses", "scores", "growth"]
    assert dict(curves.panels())["growth"] == ["resolution", "alpha"] and Image.open(run / "curves.png").format == "PNG"
    assert any(k.startswith("generator_ema.") for k in state["state_dict"])
    # 12 epochs of 4 batches, all trained: the stage of batch 4 starts with the fourth epoch's DataLoader
    # (reached by the third epoch's last batch). Adam's moments were reset when 32x32 started to fade in:
    # 20 steps since, of 48 in all (the 16x16 to_rgb layer only took the 8 steps of the fade-in)
    assert summary["batches_seen"] == 48
    assert {int(s["step"]) for s in state["optimizer_states"][1]["state"].values()} == {8, 20}


def test_resume_mid_phase_restores_resolution_and_alpha(make_cfg, tmp_path):
    first = tmp_path / "first"
    # 3 epochs of 4 batches of 8: 96 images, the end of 8x8 -> the 16x16 fade-in starts (batch 4)
    train(make_cfg(*TINY_PGGAN, "trainer.max_epochs=3", run_dir=first))
    ckpt = first / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["gan_lab"]["phase"] == {"resolution": 16, "alpha": 0.0} and state["gan_lab"]["images_seen"] == 96
    # a freshly built model restored from the checkpoint is in the same phase, without the callback
    cfg = make_cfg(*TINY_PGGAN, run_dir=tmp_path / "probe")
    build_datamodule(cfg)
    model = build_model(cfg)
    assert model.phase == (4, 1.0)
    model.on_load_checkpoint(state)
    assert model.phase == (16, 0.0)
    # the resumed run trains its first batch in that phase, at the new stage's batch size
    second = tmp_path / "second"
    train(make_cfg(*TINY_PGGAN, "trainer.max_epochs=4", f"ckpt_path={ckpt}", run_dir=second))
    log = rows(second)
    assert (log[0]["train/resolution"], log[0]["train/alpha"]) == (16, 0.0)
    assert log[0]["train/images_seen"] == 96 + 4


def test_checkpoint_loads_for_sampling_at_its_phase_without_the_callback(make_cfg, tmp_path):
    """load_run (evaluate, generate) builds the model alone: the checkpoint's phase comes with it."""
    run = tmp_path / "run"
    cfg = make_cfg(*TINY_PGGAN, "trainer.limit_train_batches=3", "trainer.max_epochs=2",
                   "callbacks.ema.half_life_images=100")
    write_run_config(cfg, run)
    train(cfg)
    loaded = load_run(run, device="cpu")
    model = loaded.model
    assert model.phase == (8, 0.5) and model.images_seen == 48
    images = model.sample_fixed()
    assert images.shape == (16, 1, 8, 8)
    # from the EMA generator, at that phase
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    ema = {k[len("generator_ema."):]: v for k, v in state["state_dict"].items() if k.startswith("generator_ema.")}
    assert all(torch.equal(v, model.generator_ema.state_dict()[k]) for k, v in ema.items())
    expected = model.generator_ema.eval()(model.fixed_noise, 8, 0.5).clamp(-1, 1)
    assert torch.allclose(images, expected)
    assert not torch.allclose(images, model.generator.eval()(model.fixed_noise, 8, 0.5).clamp(-1, 1))


def test_resume_mid_fade_in(make_cfg, tmp_path):
    first = tmp_path / "first"
    train(make_cfg(*TINY_PGGAN, "trainer.limit_train_batches=3", "trainer.max_epochs=2", run_dir=first))
    state = torch.load(first / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["gan_lab"]["images_seen"] == 48 and state["gan_lab"]["phase"] == {"resolution": 8, "alpha": 0.5}
    second = tmp_path / "second"
    train(make_cfg(*TINY_PGGAN, "trainer.limit_train_batches=3", "trainer.max_epochs=3",
                   f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}", run_dir=second))
    log = rows(second)
    assert [(r["train/resolution"], r["train/alpha"]) for r in log] == [(8, 0.5), (8, 0.75), (8, 1.0)]


def test_stage_without_batch_size_uses_data_batch_size(make_cfg, tmp_path):
    stages = ("callbacks.growth.schedule.stages=["
              "{resolution:4,fade_images:0,stable_images:16,batch_size:4},"
              "{resolution:8,fade_images:16,stable_images:16,batch_size:null},"
              "{resolution:16,fade_images:16,stable_images:16,batch_size:null},"
              "{resolution:32,fade_images:16,stable_images:16,batch_size:null}]")
    train(make_cfg(*TINY_PGGAN, stages, "data.batch_size=16", "trainer.max_epochs=3"))
    log = rows(tmp_path / "run")
    seen = [r["train/images_seen"] for r in log]
    sizes = [(r["train/resolution"], b - a) for a, b, r in zip([0.0] + seen, seen, log)]
    assert sizes[:4] == [(4, 4)] * 4 and set(sizes[4:]) <= {(8, 16), (16, 16), (32, 16)} and len(sizes) > 4
    assert sizes[4] == (8, 16)  # the second epoch's DataLoader already has the 8x8 stage's batch size


@pytest.mark.parametrize("cut_at", [11, 12])
def test_resume_inside_the_epoch_where_the_batch_size_changes_equals_uninterrupted(make_cfg, tmp_path, cut_at):
    """Epochs of 5 batches: the 16x16 stage (batch 4) starts after batch 12, inside the third epoch,
    which then ends. A SIGTERM at batch 11 (before the change) or 12 (the batch that reaches it), then
    a resume, trains as the uninterrupted run: the same epochs, batches and weights."""
    from tests.test_resume import SignalAt, assert_same  # noqa: F401  (SignalAt: named in the config)

    runs = {}
    settings = [*TINY_PGGAN, "trainer.limit_train_batches=5", "trainer.max_epochs=4", "logger=none",
                "callbacks.sample_grid=null", "callbacks.training_curves=null"]
    full = tmp_path / "full"
    train(make_cfg(*settings, run_dir=full))
    cut = tmp_path / "cut"
    kill = ["+callbacks.kill._target_=tests.test_resume.SignalAt", f"+callbacks.kill.batch={cut_at}"]
    with pytest.raises(TrainingInterrupted):
        train(make_cfg(*settings, *kill, run_dir=cut))
    after = tmp_path / "after"
    train(make_cfg(*settings, f"ckpt_path={cut / 'checkpoints' / 'last.ckpt'}", run_dir=after))
    for name, run in (("full", full), ("after", after)):
        runs[name] = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert runs["full"]["gan_lab"]["images_seen"] == 96 + 5 * 4  # 12 batches of 8, then an epoch of 5 of 4
    assert runs["after"]["gan_lab"] == runs["full"]["gan_lab"]
    assert_same(runs["full"]["state_dict"], runs["after"]["state_dict"])
