"""Conditional GANs (MLP cGAN, cDCGAN): nets (label concatenated or in a branch of its own), the MNIST
presets, tricks, per-class grids, and sample quality on digits."""
from __future__ import annotations

import copy
import csv
import json
import math
import time

import lightning as L
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import open_dict
from PIL import Image

from gan_lab.build import build_datamodule, build_model
from gan_lab.data.digits import Digits
from gan_lab.errors import UserError
from gan_lab.models import ConditionalGAN
from gan_lab.models.tricks import InstanceNoise, flip_mask, swap_flipped
from gan_lab.nets import (ConditionalDCGANDiscriminator, ConditionalDCGANGenerator, LabelBranch,
                          MLPConditionalDiscriminator, MLPConditionalGenerator)
from gan_lab.run import train
from tests.conftest import compose_config, layer_table, refused


class UnlabelledDigits(Digits):
    """The digits with their labels hidden: a stand-in for an unlabelled dataset."""

    num_classes = 1
    class_names = ["image"]

    def load_split(self, split):
        images, labels = super().load_split(split)
        return images, torch.zeros_like(labels)


@pytest.mark.parametrize("size", [32, 64])
def test_conditional_dcgan_shapes_and_label_use(size):
    torch.manual_seed(0)
    g = ConditionalDCGANGenerator(latent_dim=8, num_classes=10, image_size=size, channels=3, width=4)
    d = ConditionalDCGANDiscriminator(num_classes=10, image_size=size, channels=3, width=4)
    z, labels = torch.randn(5, 8), torch.arange(5)
    x = g(z, labels)
    assert x.shape == (5, 3, size, size) and x.abs().max() <= 1
    assert d(x, labels).shape == (5,)
    g.eval(), d.eval()
    # the label changes both outputs: the nets really are conditioned
    assert not torch.allclose(g(z, labels), g(z, (labels + 1) % 10))
    assert not torch.allclose(d(x, labels), d(x, (labels + 1) % 10))


@pytest.mark.parametrize("encoding", ["one_hot", "embedding"])
def test_mlp_cgan_shapes(encoding):
    g = MLPConditionalGenerator(latent_dim=8, num_classes=10, image_size=28, channels=1, hidden=(16, 32),
                                label_encoding=encoding)
    d = MLPConditionalDiscriminator(num_classes=10, image_size=28, channels=1, hidden=(32, 16),
                                    label_encoding=encoding)
    labels = torch.arange(6) % 10
    x = g(torch.randn(6, 8), labels)
    assert x.shape == (6, 1, 28, 28)
    assert d(x, labels).shape == (6,)
    with pytest.raises(UserError, match="label_encoding='bits'"):
        MLPConditionalGenerator(8, 10, label_encoding="bits")


def test_label_flip_swaps_the_expected_fraction():
    torch.manual_seed(0)
    n, p = 20000, 0.05
    real, fake = torch.ones(n), -torch.ones(n)
    real_side, fake_side = swap_flipped(real, fake, p)
    flipped = (real_side < 0).float().mean().item()
    assert abs(flipped - p) < 0.006
    assert torch.equal(real_side < 0, fake_side > 0)  # a swap moves one sample each way
    assert torch.equal(swap_flipped(real, fake, 0.0)[0], real)
    assert abs(flip_mask(n, 0.3).float().mean().item() - 0.3) < 0.015


def test_instance_noise_anneals_linearly_to_zero():
    noise = InstanceNoise(std=0.2, decay_batches=100)
    assert noise.std_at(0) == pytest.approx(0.2)
    assert noise.std_at(50) == pytest.approx(0.1)
    assert noise.std_at(100) == 0.0 and noise.std_at(500) == 0.0
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 16, 16)
    assert noise(x, 0).std().item() == pytest.approx(0.2, rel=0.05)
    assert noise(x, 75).std().item() == pytest.approx(0.05, rel=0.05)
    assert torch.equal(noise(x, 100), x)
    assert InstanceNoise(0.1).std_at(10**6) == pytest.approx(0.1)  # no decay: constant


@pytest.mark.parametrize("overrides", [
    ["model=cdcgan", "model.instance_noise=-1"], ["model=cdcgan", "model.instance_noise_decay=-5"],
    ["model=cdcgan", "model.label_flip=1.0"], ["model=cdcgan", "model.samples_per_class=0"],
    ["model=cgan_mlp", "model.generator.hidden=[]"], ["model=cgan_mlp", "model.discriminator.hidden=[0,4]"],
    ["model=cgan_mlp", "model.generator.embedding_dim=0"], ["model=cdcgan", "model.discriminator.dropout=1.0"]])
def test_bad_values_of_conditional_models_are_refused(make_cfg, overrides):
    bad = overrides[-1].replace("[", r"\[").replace("]", r"\]")
    cfg = make_cfg(*overrides)
    build_datamodule(cfg, setup=False)  # the data's facts the nets take
    with pytest.raises(UserError, match=rf"^{bad} must be "):
        build_model(cfg)


def read_rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("model", ["cdcgan", "cgan_mlp"])
def test_conditional_model_trains_and_draws_one_row_per_class(make_cfg, tmp_path, model):
    overrides = [f"model={model}", "data.image_size=16", "model.samples_per_class=3",
                 "model.label_flip=0.1", "model.instance_noise=0.1", "model.instance_noise_decay=4"]
    if model == "cdcgan":
        overrides += ["model.generator.width=4", "model.discriminator.width=4"]
    else:
        overrides += ["model.generator.hidden=[16,32]", "model.discriminator.hidden=[32,16]"]
    train(make_cfg(*overrides))
    run = tmp_path / "run"
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "completed" and summary["batches_seen"] == 6
    logged = {k for row in read_rows(run / "metrics.csv") for k, v in row.items() if v}
    assert {"train/d_loss", "train/g_loss", "train/d_real", "train/d_fake"} <= logged
    # 10 rows (one per digit) of 3 images, upscaled to 64 px with 2 px padding, names on the left
    grid = Image.open(run / "samples" / "final.png")
    assert grid.height == 10 * 66 + 2 and grid.width > 3 * 66 + 2
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert state["fixed_labels"].tolist() == [k for k in range(10) for _ in range(3)]
    z = state["fixed_noise"]
    assert torch.equal(z[0], z[3]) and not torch.equal(z[0], z[1])  # one latent per column


def test_grid_rows_carry_class_names(make_cfg):
    cfg = make_cfg("model=cdcgan", "model.generator.width=4", "model.discriminator.width=4")
    build_datamodule(cfg)
    model = build_model(cfg)
    assert isinstance(model, ConditionalGAN)
    assert model.grid_row_names == [str(i) for i in range(10)] and model.grid_nrow == 8
    images = model.sample_fixed()
    assert images.shape == (80, 1, 32, 32)


def test_conditional_model_on_unlabelled_data_is_a_user_error(make_cfg):
    cfg = make_cfg("model=cdcgan", "data._target_=tests.test_conditional.UnlabelledDigits")
    with refused("num_classes=1", "data=digits"):
        train(cfg)


# --- sample quality: an independent classifier reads the requested digit --------------------


def train_digit_classifier(dm: Digits, epochs: int = 8, seed: int = 0) -> tuple[nn.Module, float]:
    """A small CNN trained on the real training digits; returns it and its held-out accuracy."""
    torch.manual_seed(seed)
    clf = nn.Sequential(nn.Conv2d(1, 32, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(32, 64, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(64 * (dm.image_size // 4) ** 2, 10))
    opt = torch.optim.Adam(clf.parameters(), 1e-3)
    train_set = dm.dataset("train")
    x, y = train_set.images.float() / 127.5 - 1, train_set.labels
    for _ in range(epochs):
        perm = torch.randperm(len(y))
        for i in range(0, len(y), 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(clf(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    clf.eval()
    with torch.no_grad():
        val_x, val_y = next(dm.batches("val", batch_size=10**6))
        acc = (clf(val_x).argmax(1) == val_y).float().mean().item()
    return clf, acc


def generated_digit_accuracy(make_cfg, tmp_path, *overrides: str, per_class: int = 100) -> tuple[float, float, float]:
    """Train experiment=cdcgan_digits (plus ``overrides``); returns the accuracy of an independent
    classifier on generated digits of each requested class, its accuracy on real held-out digits,
    and the training seconds."""
    cfg = make_cfg("experiment=cdcgan_digits", "callbacks.progress_bar=null", "callbacks.sample_grid.every_n_epochs=1000",
                   "logger=none", *overrides, tiny=False)
    start = time.time()
    train(cfg)
    seconds = time.time() - start
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    gan = build_model(cfg)  # train() has published the data facts into cfg.data
    gan.load_state_dict(ckpt["state_dict"])
    dm = Digits(image_size=cfg.data.image_size)
    dm.setup("fit")
    clf, real_acc = train_digit_classifier(dm)
    torch.manual_seed(1)
    labels = torch.arange(10).repeat(per_class)
    with torch.no_grad():
        images = gan.sample(gan.noise.sample(len(labels)), labels)
        gen_acc = (clf(images).argmax(1) == labels).float().mean().item()
    return gen_acc, real_acc, seconds


def test_cdcgan_digits_are_recognisable_fast(make_cfg, tmp_path):
    """At 16x16, 12 epochs (about 20 s of CPU) put the requested digit far above chance (10 %)."""
    gen_acc, real_acc, seconds = generated_digit_accuracy(make_cfg, tmp_path, "data.image_size=16",
                                                          "trainer.max_epochs=12")
    print(f"cdcgan-16 12 epochs: generated {gen_acc:.3f}, real {real_acc:.3f}, {seconds:.0f} s")
    assert real_acc > 0.9
    assert gen_acc > 0.5


@pytest.mark.slow
def test_cdcgan_digits_quality(make_cfg, tmp_path):
    """experiment=cdcgan_digits (32x32, width 32, batch 64, Adam 2e-4) for 20 epochs: >= 90 %
    of generated digits are read as the requested class by an independently trained classifier."""
    gen_acc, real_acc, seconds = generated_digit_accuracy(make_cfg, tmp_path, "trainer.max_epochs=20")
    print(f"cdcgan-32 20 epochs: generated {gen_acc:.3f}, real {real_acc:.3f}, {seconds:.0f} s")
    assert real_acc > 0.9
    assert gen_acc >= 0.9


# --- conditioning=branch: the label gets a first layer of its own (the study's MNIST designs) ----


def preset_nets(experiment: str) -> tuple[nn.Module, nn.Module]:
    """The generator and discriminator of an MNIST preset, built from its composed config (MNIST
    itself is not needed: its published facts, 1 channel and 10 classes, are filled in)."""
    cfg = compose_config([f"experiment={experiment}"])
    with open_dict(cfg):
        cfg.data.channels, cfg.data.num_classes = 1, 10
    torch.manual_seed(0)
    return instantiate(cfg.model.generator), instantiate(cfg.model.discriminator)


def test_cdcgan_mnist_branch_nets_follow_the_study_layer_by_layer():
    g, d = preset_nets("cdcgan_mnist")
    labels = torch.arange(4)
    # G, d = 128, latent 100, 10 classes; the transposed convs have no bias (a BatchNorm follows)
    assert layer_table(g, torch.randn(4, 100), labels, with_parameters_only=True) == [
        ("ConvTranspose2d", (256, 4, 4), 409_600),    # z branch: 100*256*4*4
        ("ConvTranspose2d", (256, 4, 4), 40_960),     # y branch: 10*256*4*4
        ("BatchNorm2d", (512, 4, 4), 1_024),          # both branches joined: 2*512
        ("ConvTranspose2d", (256, 8, 8), 2_097_152),  # 512*256*16
        ("BatchNorm2d", (256, 8, 8), 512),
        ("ConvTranspose2d", (128, 16, 16), 524_288),  # 256*128*16
        ("BatchNorm2d", (128, 16, 16), 256),
        ("ConvTranspose2d", (1, 32, 32), 2_048),      # 128*1*16
    ]
    # 409,600 + 40,960 + 1,024 + 2,097,152 + 512 + 524,288 + 256 + 2,048
    assert sum(p.numel() for p in g.parameters()) == 3_075_840
    # D: the image and the 10 constant label maps each get 64 maps at 16x16
    assert layer_table(d, torch.randn(4, 1, 32, 32), labels, with_parameters_only=True) == [
        ("Conv2d", (64, 16, 16), 1_024),       # x branch: 1*64*4*4
        ("Conv2d", (64, 16, 16), 10_240),      # y branch: 10*64*4*4
        ("Conv2d", (256, 8, 8), 524_288),      # 128*256*16
        ("BatchNorm2d", (256, 8, 8), 512),
        ("Conv2d", (512, 4, 4), 2_097_152),    # 256*512*16
        ("BatchNorm2d", (512, 4, 4), 1_024),
        ("Conv2d", (1, 1, 1), 8_192),          # 512*1*16: one logit
    ]
    # 1,024 + 10,240 + 524,288 + 512 + 2,097,152 + 1,024 + 8,192
    assert sum(p.numel() for p in d.parameters()) == 2_642_432
    z = torch.randn(4, 100)
    x = g(z, labels)
    assert x.shape == (4, 1, 32, 32) and x.abs().max() <= 1
    assert d(x, labels).shape == (4,)
    # the label changes both outputs
    assert not torch.allclose(g(z, labels), g(z, (labels + 1) % 10))
    assert not torch.allclose(d(x, labels), d(x, (labels + 1) % 10))


def test_cgan_mnist_branch_nets_follow_the_study_layer_by_layer():
    g, d = preset_nets("cgan_mnist")
    labels = torch.arange(4)
    assert layer_table(g, torch.randn(4, 100), labels, with_parameters_only=True) == [
        ("Linear", (256,), 25_856),       # z branch: 100*256 + 256
        ("Linear", (256,), 2_816),        # y branch: 10*256 + 256
        ("BatchNorm1d", (512,), 1_024),   # both branches joined: 2*512
        ("Linear", (512,), 262_656),      # 512*512 + 512
        ("BatchNorm1d", (512,), 1_024),
        ("Linear", (1024,), 525_312),     # 512*1024 + 1024
        ("BatchNorm1d", (1024,), 2_048),
        ("Linear", (784,), 803_600),      # 1024*784 + 784
    ]
    # 25,856 + 2,816 + 1,024 + 262,656 + 1,024 + 525,312 + 2,048 + 803,600
    assert sum(p.numel() for p in g.parameters()) == 1_624_336
    assert [type(m).__name__ for m in g.net if next(m.parameters(), None) is None] == [
        "ReLU", "ReLU", "ReLU", "Tanh"]  # the activations, in order
    assert layer_table(d, torch.randn(4, 1, 28, 28), labels, with_parameters_only=True) == [
        ("Linear", (1024,), 803_840),     # x branch: 784*1024 + 1024
        ("Linear", (1024,), 11_264),      # y branch: 10*1024 + 1024
        ("Linear", (512,), 1_049_088),    # 2048*512 + 512
        ("BatchNorm1d", (512,), 1_024),
        ("Linear", (256,), 131_328),      # 512*256 + 256
        ("BatchNorm1d", (256,), 512),
        ("Linear", (1,), 257),            # 256 + 1: one logit
    ]
    # 803,840 + 11,264 + 1,049,088 + 1,024 + 131,328 + 512 + 257
    assert sum(p.numel() for p in d.parameters()) == 1_997_313
    assert not any(isinstance(m, nn.Dropout) for m in d.modules())
    z = torch.randn(4, 100)
    x = g(z, labels)
    assert x.shape == (4, 1, 28, 28) and x.abs().max() <= 1
    assert d(x, labels).shape == (4,)
    assert not torch.allclose(g(z, labels), g(z, (labels + 1) % 10))
    assert not torch.allclose(d(x, labels), d(x, (labels + 1) % 10))


def test_mnist_presets_carry_the_study_settings():
    for experiment, model, size in (("cdcgan_mnist", "ConditionalDCGANGenerator", 32),
                                    ("cgan_mnist", "MLPConditionalGenerator", 28)):
        cfg = compose_config([f"experiment={experiment}"])
        assert cfg.model.generator._target_ == f"gan_lab.nets.{model}"
        assert cfg.model.generator.conditioning == cfg.model.discriminator.conditioning == "branch"
        assert cfg.data._target_ == "gan_lab.data.MNIST" and cfg.data.image_size == size
        assert cfg.data.batch_size == 128 and cfg.noise.latent_dim == 100
        assert cfg.noise._target_ == "gan_lab.noise.Normal" and cfg.loss.name == "non_saturating"
        for net in ("generator", "discriminator"):
            assert cfg.optimizer[net].lr == 2e-4 and cfg.optimizer[net].betas[0] == 0.5
        assert cfg.trainer.max_epochs == -1 and cfg.trainer.max_batches == 9360


def small_nets(conditioning: str) -> list[tuple[nn.Module, tuple[int, ...]]]:
    """Every conditional net, small, with its input shape."""
    return [
        (ConditionalDCGANGenerator(8, 10, 16, 1, width=4, conditioning=conditioning), (8,)),
        (ConditionalDCGANDiscriminator(10, 16, 1, width=4, conditioning=conditioning), (1, 16, 16)),
        (MLPConditionalGenerator(8, 10, 8, 1, hidden=(16, 32), conditioning=conditioning), (8,)),
        (MLPConditionalDiscriminator(10, 8, 1, hidden=(32, 16), conditioning=conditioning), (1, 8, 8)),
    ]


@pytest.mark.parametrize("conditioning", ["concat", "branch"])
def test_nets_take_class_weight_blends(conditioning):
    torch.manual_seed(0)
    labels = torch.tensor([0, 3, 7, 9])
    one_hot = F.one_hot(labels, 10).float()
    blend = 0.3 * one_hot + 0.7 * F.one_hot((labels + 1) % 10, 10).float()
    for net, shape in small_nets(conditioning):
        net.eval()
        x = torch.randn(4, *shape)
        with torch.no_grad():
            assert torch.allclose(net(x, one_hot), net(x, labels), atol=1e-6)
            mixed = net(x, blend)
        assert not torch.allclose(mixed, net(x, labels))


def test_branch_width_defaults_to_half_the_first_layer():
    def branch(net: nn.Module) -> LabelBranch:
        return next(m for m in net.modules() if isinstance(m, LabelBranch))

    g = ConditionalDCGANGenerator(8, 10, 16, 1, width=4, conditioning="branch")
    first = branch(g)
    assert g.branch_channels == 4  # width 4 * 2 = 8 maps at 4x4
    assert (first.input_layer.in_channels, first.input_layer.out_channels) == (8, 4)
    assert (first.label_layer.in_channels, first.label_layer.out_channels) == (10, 4)
    g = ConditionalDCGANGenerator(8, 10, 16, 1, width=4, conditioning="branch", branch_channels=2)
    assert branch(g).input_layer.out_channels == 6 and branch(g).label_layer.out_channels == 2
    d = ConditionalDCGANDiscriminator(10, 16, 3, width=8, conditioning="branch", spectral_norm=True)
    first = branch(d)
    assert (first.input_layer.in_channels, first.input_layer.out_channels) == (3, 4)
    assert nn.utils.parametrize.is_parametrized(first.label_layer, "weight")  # spectral norm kept
    m = MLPConditionalDiscriminator(10, 8, 1, hidden=(30, 16), conditioning="branch", branch_width=10)
    assert (branch(m).input_layer.out_features, branch(m).label_layer.out_features) == (20, 10)


@pytest.mark.parametrize("build,named", [
    (lambda: ConditionalDCGANGenerator(8, 10, 16, 1, width=4, conditioning="stack"),
     ("model.generator.conditioning='stack'", "concat, branch")),
    (lambda: ConditionalDCGANGenerator(8, 10, 16, 1, width=4, branch_channels=4),
     ("model.generator.branch_channels=4", "conditioning=branch")),
    (lambda: ConditionalDCGANGenerator(8, 10, 16, 1, width=4, conditioning="branch", branch_channels=8),
     ("model.generator.branch_channels=8", "1 to 7")),
    (lambda: ConditionalDCGANDiscriminator(10, 16, 1, width=4, conditioning="branch", branch_channels=0),
     ("model.discriminator.branch_channels=0", "1 to 3")),
    (lambda: MLPConditionalDiscriminator(10, 8, 1, hidden=(32, 16), branch_width=8),
     ("model.discriminator.branch_width=8", "conditioning=branch")),
    (lambda: MLPConditionalGenerator(8, 10, 8, 1, hidden=(16, 32), conditioning="branch", branch_width=16),
     ("model.generator.branch_width=16", "1 to 15")),
    (lambda: MLPConditionalGenerator(8, 10, 8, 1, activation="gelu"),
     ("model.generator.activation='gelu'", "leaky_relu, relu")),
])
def test_invalid_conditioning_options_are_one_sentence_user_errors(build, named):
    with refused(*named) as info:
        build()
    message = str(info.value)
    assert message.endswith(".") and message.replace("e.g. ", "").count(". ") == 0 and "\n" not in message


@pytest.mark.parametrize("model", ["cdcgan", "cgan_mlp"])
def test_branch_conditioned_models_train_on_digits(make_cfg, tmp_path, model):
    overrides = [f"model={model}", "model.generator.conditioning=branch", "data.image_size=16"]
    if model == "cdcgan":
        overrides += ["model.generator.width=4", "model.discriminator.width=4"]
        keys = ["generator.dcgan.net.0", "discriminator.dcgan.features.0"]
    else:
        overrides += ["model.generator.hidden=[16,32]", "model.discriminator.hidden=[32,16]"]
        keys = ["generator.net.0", "discriminator.net.0"]
    cfg = make_cfg(*overrides)
    # the nets as train() builds them, before training (same seed, same order; on a copy, since
    # building publishes the data facts into the config)
    probe = copy.deepcopy(cfg)
    L.seed_everything(probe.seed, workers=True, verbose=False)
    build_datamodule(probe)
    before = build_model(probe).state_dict()
    train(cfg)
    run = tmp_path / "run"
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "completed" and summary["batches_seen"] == 6
    losses = [float(row[k]) for row in read_rows(run / "metrics.csv")
              for k in ("train/d_loss", "train/g_loss") if row.get(k)]
    assert losses and all(math.isfinite(v) for v in losses)
    after = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    for key in keys:  # both branches of both nets exist and were trained
        for branch in ("input_layer", "label_layer"):
            name = next(k for k in after if k.startswith(f"{key}.{branch}.") and k.endswith("weight"))
            assert before[name].shape == after[name].shape
            assert not torch.allclose(before[name], after[name]), name
