"""Conditional GANs (MLP cGAN, cDCGAN): nets, tricks, per-class grids, and sample quality on digits."""
from __future__ import annotations

import csv
import json
import time

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from gan_lab.build import build_datamodule, build_model
from gan_lab.data.digits import Digits
from gan_lab.errors import UserError
from gan_lab.models import ConditionalGAN
from gan_lab.models.tricks import InstanceNoise, flip_mask, swap_flipped
from gan_lab.nets import (ConditionalDCGANDiscriminator, ConditionalDCGANGenerator, MLPConditionalDiscriminator,
                          MLPConditionalGenerator)
from gan_lab.run import train


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
    with pytest.raises(UserError, match="instance_noise=-1"):
        InstanceNoise(-1.0)


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
    with pytest.raises(UserError, match="num_classes=1.*labelled dataset"):
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
