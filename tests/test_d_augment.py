"""Differentiable augmentation of D's inputs (DiffAugment, ADA) and training on a subset of the data."""
from __future__ import annotations

import csv
import math

import lightning as L
import pytest
import torch

from gan_lab.build import build_datamodule, build_model, check_types, instantiate_checked, serve_draws
from gan_lab.d_augment import (ADA_OPS, ORIENTATION_OPS, AdaptiveAugment, DiffAugment, _affine, ada_pipeline, color,
                               cutout, translation)
from gan_lab.errors import UserError
from gan_lab.run import train
from tests.conftest import NARROW_NETS, compose_config, refused

NARROW = NARROW_NETS


@pytest.mark.parametrize("augment", [DiffAugment(), AdaptiveAugment(p=1.0)], ids=["diffaugment", "ada"])
def test_augmentation_is_differentiable_and_per_sample(augment):
    torch.manual_seed(0)
    x = torch.rand(6, 3, 16, 16, requires_grad=True)
    out = augment(x)
    assert out.shape == x.shape
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0          # G's gradients pass through
    same = torch.rand(1, 3, 16, 16).expand(6, -1, -1, -1)
    drawn = augment(same)
    assert all(not torch.equal(drawn[0], drawn[i]) for i in range(1, 6))  # one draw per sample


def test_policies_do_what_they_say():
    torch.manual_seed(0)
    x = torch.rand(64, 1, 16, 16) * 2 - 1
    moved = translation(x)
    # whole-pixel shifts of at most 2 pixels (1/8 of 16) with zeros shifted in
    found = []
    for i in range(64):
        match = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if torch.equal(moved[i, :, max(dy, 0):16 + min(dy, 0), max(dx, 0):16 + min(dx, 0)],
                                x[i, :, max(-dy, 0):16 + min(-dy, 0), max(-dx, 0):16 + min(-dx, 0)])]
        found.append(bool(match))
    assert all(found)
    cut = cutout(torch.ones(64, 1, 16, 16))
    zeros = (cut == 0).flatten(1).sum(1)
    assert zeros.max() == 64 and zeros.min() > 0                  # an 8x8 hole, partly outside at times
    shifted = color(torch.zeros(256, 3, 4, 4))
    assert shifted.std() > 0.1 and shifted.mean().abs() < 0.1     # brightness +U(-0.5, 0.5), per sample


def test_p_zero_is_the_identity_and_draws_nothing():
    x = torch.rand(4, 3, 8, 8)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    assert DiffAugment(p=0.0)(x) is x and ada_pipeline(x, 0.0) is x and AdaptiveAugment()(x) is x
    assert torch.equal(torch.get_rng_state(), state)


def fit(cfg):
    L.seed_everything(cfg.seed, verbose=False)
    dm = build_datamodule(cfg)
    model = build_model(cfg)
    serve_draws(model, dm)
    # the schedule callbacks a model brings with it (model=pggan: its growth and EMA)
    callbacks = [instantiate_checked(cfg.callbacks[name], f"callbacks.{name}") for name in ("growth", "ema")
                 if cfg.callbacks.get(name) is not None]
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=3, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        log_every_n_steps=1, callbacks=callbacks)
    trainer.fit(model, datamodule=dm)
    return model, trainer


def test_zero_probability_trains_bit_identically_to_no_augmentation(make_cfg):
    plain, _ = fit(make_cfg("model=wgan_gp", *NARROW["wgan_gp"], "data.image_size=16"))
    zero, _ = fit(make_cfg("model=wgan_gp", *NARROW["wgan_gp"], "data.image_size=16", "d_augment=diffaugment",
                           "d_augment.p=0"))
    ada, _ = fit(make_cfg("model=wgan_gp", *NARROW["wgan_gp"], "data.image_size=16", "d_augment=ada",
                          "d_augment.speed_images=1000000000"))  # p stays 0 (moves by < 1e-7)
    on, _ = fit(make_cfg("model=wgan_gp", *NARROW["wgan_gp"], "data.image_size=16", "d_augment=diffaugment"))
    a = plain.state_dict()
    for other in (zero, ada):
        assert all(torch.equal(a[k], other.state_dict()[k]) for k in a)
    assert not all(torch.equal(a[k], on.state_dict()[k]) for k in a)


@pytest.mark.parametrize("model", list(NARROW))
def test_every_model_trains_with_diffaugment_and_ada(make_cfg, model):
    for option in ("diffaugment", "ada"):
        extra = ["d_augment.p=0.5", "d_augment.interval=1", "d_augment.speed_images=64"] if option == "ada" else []
        m, trainer = fit(make_cfg(f"model={model}", *NARROW[model], "data.image_size=16", f"d_augment={option}",
                                  *extra))
        logged = m.logged
        assert math.isfinite(logged["train/d_loss"])
        if option == "ada":
            assert "train/ada_p" in logged and "train/ada_rt" in logged
            assert m.d_augment.p != 0.5                            # it adjusted (interval 1, big steps)


def test_ada_raises_p_when_d_overfits_and_lowers_it_otherwise():
    ada = AdaptiveAugment(target=0.6, speed_images=1000, interval=2)
    confident = torch.full((100,), 3.0)                           # D calls every real image real: r_t = 1
    for _ in range(4):
        ada.observe(confident)
        ada.batch_done(100)
    assert ada.rt == 1.0 and ada.p == pytest.approx(0.4)          # 2 adjustments of 200/1000
    unsure = torch.tensor([1.0, -1.0] * 50)                       # r_t = 0 < 0.6
    ada.observe(unsure)
    ada.batch_done(100)
    assert ada.p == pytest.approx(0.4)                            # mid-interval: unchanged
    ada.observe(unsure)
    ada.batch_done(100)
    assert ada.rt == 0.0 and ada.p == pytest.approx(0.2)
    for _ in range(10):
        ada.observe(unsure)
        ada.batch_done(100)
    assert ada.p == 0.0                                           # clamped at 0
    at_target = AdaptiveAugment(target=0.5, speed_images=1000, interval=1, p=0.3)
    at_target.observe(torch.tensor([1.0, 1.0, 1.0, -1.0]))        # r_t = 0.5: the target itself
    at_target.batch_done(100)
    assert at_target.rt == 0.5 and at_target.p == 0.3             # sign(0) = 0: p stays


def test_ada_counts_batches_and_reads_p_from_the_device():
    """Several D updates in a batch add their outputs to the same r_t; p moves per batch; the kernels
    read p from a device tensor and draw the same images as with the number."""
    ada = AdaptiveAugment(target=0.6, speed_images=1000, interval=2)
    for _ in range(2):
        for _ in range(5):                                        # n_critic = 5
            ada.observe(torch.tensor([1.0, 1.0, 1.0, -1.0]))
        ada.batch_done(100)
    assert ada.rt == 0.5 and ada.p == 0.0                         # one adjustment after 2 batches, down, clamped
    ada.load_state({"p": 0.3, "rt": 0.5, "sign_sum": 6.0, "count": 8, "batches": 1, "images": 100})
    assert ada.p_device.tolist() == pytest.approx([0.3, 1 - math.sqrt(0.7)])
    ada.observe(torch.tensor([1.0] * 8))
    ada.batch_done(100)
    assert ada.rt == 14 / 16 and ada.p == pytest.approx(0.5)      # the restored partial interval counted
    assert ada.p_device[0].item() == pytest.approx(0.5) and ada.capture_key() == (True, False)
    x = torch.rand(16, 3, 8, 8) * 2 - 1
    for p in (0.05, 0.5, 0.97):
        ada.load_state({"p": p, "rt": 0.0, "sign_sum": None, "count": 0, "batches": 0, "images": 0})
        torch.manual_seed(1)
        read = ada(x)
        torch.manual_seed(1)
        assert torch.equal(read, ada_pipeline(x, p)) and not torch.equal(read, x)
    ada.p_device.fill_(0.999)                                     # what the kernels read is the tensor
    torch.manual_seed(1)
    read = ada(x)
    torch.manual_seed(1)
    assert not torch.equal(read, ada_pipeline(x, 0.97))
    assert ada.stats.tolist() == [0.0, 0.0] and not ada.state_dict()
    ada.to(torch.bfloat16)                                        # bf16-true: the sums stay float32
    ada.observe(torch.tensor([1.0] * 257))
    assert ada.stats.dtype == ada.p_device.dtype == torch.float32 and ada.stats.tolist() == [257.0, 257.0]


def test_ada_p_rises_on_a_discriminator_that_overfits_a_few_images(make_cfg, tmp_path):
    """16 digits, a D with 8x G's learning rate: D soon calls every real image real, and p climbs."""
    cfg = make_cfg("model=dcgan", *NARROW["dcgan"], "data.image_size=16", "data.subset=16", "data.batch_size=8",
                   "optimizer.discriminator.lr=1.6e-3", "d_augment=ada", "d_augment.interval=1",
                   "d_augment.speed_images=400", "trainer.max_epochs=20", "trainer.log_every_n_steps=1",
                   "callbacks.sample_grid=null", "callbacks.training_curves=null")
    train(cfg)
    with open(tmp_path / "run" / "metrics.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("train/ada_p")]
    p = [float(r["train/ada_p"]) for r in rows]
    rt = [float(r["train/ada_rt"]) for r in rows]
    assert max(rt[-10:]) > 0.6 and p[-1] > 0.2 and p[-1] > p[len(p) // 4]


def test_exact_resume_with_ada(make_cfg, tmp_path):
    common = ["model=dcgan", *NARROW["dcgan"], "data.image_size=16", "data.batch_size=16",
              "trainer.limit_train_batches=4", "d_augment=ada", "d_augment.p=0.3", "d_augment.interval=3",
              "d_augment.speed_images=200", "callbacks.sample_grid=null", "callbacks.training_curves=null",
              "logger=none"]
    train(make_cfg(*common, "trainer.max_epochs=2", run_dir=tmp_path / "full"))
    train(make_cfg(*common, "trainer.max_epochs=1", run_dir=tmp_path / "half"))
    ckpt = tmp_path / "half" / "checkpoints" / "last.ckpt"
    train(make_cfg(*common, "trainer.max_epochs=2", f"ckpt_path={ckpt}", run_dir=tmp_path / "resumed"))
    full = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    got = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert all(torch.equal(full["state_dict"][k], got["state_dict"][k]) for k in full["state_dict"])
    assert got["gan_lab"]["d_augment"] == full["gan_lab"]["d_augment"]
    assert full["gan_lab"]["d_augment"]["p"] != 0.3               # it moved, and the resume followed


def test_ada_without_the_orientation_operations_never_mirrors_or_turns_an_image():
    torch.manual_seed(0)
    upright = [op for op in ADA_OPS if op not in ORIENTATION_OPS]
    linear = _affine(512, 1.0, "cpu", torch.float32, ops=upright)[:, :, :2]
    assert (linear[:, 0, 1] == 0).all() and (linear[:, 1, 0] == 0).all()   # no rotation at all
    assert (linear[:, 0, 0] > 0).all() and (linear[:, 1, 1] > 0).all()     # no mirror: scaled only
    assert (linear[:, 0, 0] != 1).all()                                    # and scaled it is
    linear = _affine(512, 1.0, "cpu", torch.float32)[:, :, :2]
    mirrored = torch.linalg.det(linear) < 0
    turned = linear[:, 0, 1].abs() > 1e-3
    assert 0.4 < mirrored.float().mean() < 0.6 and turned.float().mean() > 0.9
    x = torch.full((256, 1, 16, 16), -1.0)
    x[..., :8] = 1.0
    torch.manual_seed(0)
    colour_only = AdaptiveAugment(p=1.0, ops=["brightness", "contrast"])(x)
    assert torch.allclose(colour_only[..., :8].std(dim=(1, 2, 3)), torch.zeros(256), atol=1e-5)  # not moved
    assert (colour_only[..., 0] > colour_only[..., -1]).all()
    assert (colour_only - x).abs().max() > 0.1                               # but shifted in intensity


def test_bf16_inputs_stay_bf16_and_finite():
    x = (torch.rand(4, 3, 16, 16) * 2 - 1).to(torch.bfloat16)
    for augment in (DiffAugment(), AdaptiveAugment(p=1.0)):
        out = augment(x)
        assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_bad_values_are_one_sentence():
    with refused("d_augment.policy=['blur']", "color, translation, cutout"):
        DiffAugment(["blur"])
    for overrides in (["d_augment=diffaugment", "d_augment.p=1.5"], ["d_augment=ada", "d_augment.target=1.2"],
                      ["d_augment=ada", "d_augment.interval=0"]):
        with pytest.raises(UserError, match=rf"^{overrides[-1]} must be "):
            check_types(compose_config(overrides).d_augment, "d_augment")
    with refused("d_augment.ops", "['flip']", "'xint'"):
        AdaptiveAugment(ops=["xint", "flip"])
    with refused("d_augment.ops=[]", "d_augment.ops=[xint,"):
        AdaptiveAugment(ops=[])


def test_subset_is_drawn_from_the_seed_and_keeps_the_full_split(make_cfg):
    def train_labels(*overrides):
        dm = build_datamodule(make_cfg(*overrides))
        return dm, dm.dataset("train").labels
    dm, a = train_labels("data.subset=0.1")
    _, b = train_labels("data.subset=0.1")
    _, c = train_labels("data.subset=0.1", "seed=1")
    n_full = len(dm.dataset("train_full"))
    assert len(a) == round(0.1 * n_full) and torch.equal(a, b) and not torch.equal(a, c)
    assert len(train_labels("data.subset=160")[1]) == 160
    with pytest.raises(UserError, match=r"^data\.subset=1\.5 must be "):
        build_datamodule(make_cfg("data.subset=1.5"))
    with refused("data.subset=100000", "(0, 1)"):
        build_datamodule(make_cfg("data.subset=100000"))


def test_domain_extractor_learns_from_the_whole_training_split_under_a_subset(make_cfg):
    """Runs on different parts of the data (data.subset with other seeds) are scored in one feature space."""
    from hydra.utils import instantiate

    extractors = []
    for seed in (0, 1):
        cfg = make_cfg("data.subset=0.1", f"seed={seed}", "callbacks=with_metrics",
                       "callbacks.metrics.evaluator.seed=0", "callbacks.metrics.evaluator.extractor.steps=5")
        dm = build_datamodule(cfg)
        evaluator = instantiate(cfg.callbacks.metrics.evaluator)
        extractors.append(evaluator.extractor(dm, "cpu", kind="domain"))
    a, b = (dict(e.state_dict()) for e in extractors)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("preset, variant", [
    ("monet_noise", ["noise=uniform", "d_augment=diffaugment"]),
    ("monet_noise", ["noise=uniform", "d_augment=ada", "d_augment.speed_images=5000",
                     "d_augment.ops=[xflip,xint,scale,aniso,xfrac,brightness,contrast,saturation]"]),
    ("pokemon_wgan_gp128", ["augment=none", "d_augment=diffaugment"]),
    ("pokemon_pggan128", ["augment=none", "d_augment=diffaugment"]),
])
def test_the_documented_small_data_variants_of_the_presets_build(make_cfg, preset, variant):
    """The variants of experiments/monet_noise and experiments/pokemon, built on the bundled digits at
    the preset's image size (the paintings and sprites are not bundled)."""
    cfg = make_cfg(f"experiment={preset}", *variant, "data=digits", tiny=False)
    dm = build_datamodule(cfg)
    model = build_model(cfg)
    assert dm.augment is None or not dm.augment.enabled         # no real-only augmentation left to leak
    if "d_augment=ada" in variant:
        assert isinstance(model.d_augment, AdaptiveAugment) and "rotate90" not in model.d_augment.ops
        assert "xflip" in model.d_augment.ops and model.d_augment.speed_images == 5000
    else:
        assert isinstance(model.d_augment, DiffAugment) and model.d_augment.policy == list(("color", "translation",
                                                                                            "cutout"))
    x = torch.rand(2, cfg.data.channels, 16, 16, requires_grad=True)
    model.d_augment.p = 1.0
    model.augment_for_d(x).sum().backward()
    assert x.grad is not None
