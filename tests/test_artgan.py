"""ArtGAN: net shapes, K+1 targets, reconstruction term, study knobs, checkpointed state."""
from __future__ import annotations

import csv
import json
import math

import lightning as L
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gan_lab.build import build_datamodule, build_model
from gan_lab.errors import UserError
from gan_lab.losses import GANLoss, categorical_targets, d_bce, d_categorical, g_categorical, g_non_saturating
from gan_lab.models import GAN, ArtGAN
from gan_lab.models.artgan import adversarial_loss, reconstruction_loss
from gan_lab.nets import ArtGANDiscriminator, ArtGANGenerator, DCGANDiscriminator, DCGANGenerator
from gan_lab.noise import Normal
from gan_lab.run import train
from tests.conftest import refused

TINY_ARTGAN = ["model=artgan", "model.generator.width=4", "model.samples_per_class=2"]


@pytest.mark.parametrize("size", [16, 32, 64, 128])
def test_artgan_net_shapes(size):
    torch.manual_seed(0)
    k, w = 27, 4
    g = ArtGANGenerator(latent_dim=8, num_classes=k, image_size=size, channels=3, width=w)
    d = ArtGANDiscriminator(num_classes=k, image_size=size, channels=3, width=w, dropout=0.3)
    labels = torch.arange(3)
    features = g.znet(torch.randn(3, 8), labels)
    assert features.shape == (3, 4 * w, 8, 8)
    x = g.decoder(features)
    assert x.shape == (3, 3, size, size) and x.abs().max() <= 1
    assert d.encoder(x).shape == features.shape  # Enc and zNet share the feature space
    assert d(x).shape == (3, k + 1)
    assert g.decoder(d.encoder(x)).shape == x.shape


def test_artgan_paper_shapes_at_64():
    g = ArtGANGenerator(latent_dim=100, num_classes=10, image_size=64, channels=3, width=128)
    d = ArtGANDiscriminator(num_classes=10, image_size=64, channels=3, width=128)
    convs = [m for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert [m.out_channels for m in convs] == [1024, 512, 256, 128, 128, 3]
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in convs] == [128, 128, 256, 512, 1024]
    assert [m for m in d.classifier.modules() if isinstance(m, nn.Linear)][-1].in_features == 1024 * 16


def test_k_plus_one_targets():
    labels = torch.tensor([0, 3, 9])
    t = categorical_targets(labels, 11)
    assert t.shape == (3, 11)
    assert t.sum(1).tolist() == [1, 1, 1] and t[1, 3] == 1 and t[:, 10].sum() == 0
    fake = categorical_targets(torch.full((2,), 10), 11)
    assert fake[:, 10].tolist() == [1, 1] and fake[:, :10].sum() == 0
    smooth = categorical_targets(labels, 11, target=0.9)
    assert smooth.max() == pytest.approx(0.9) and smooth.min() == 0  # one-sided


def test_categorical_objective_is_the_k_plus_one_bce_written_out():
    """D: -sum over the K+1 outputs of [t log s + (1 - t) log(1 - s)], averaged; smoothing lowers t on the
    real side only. G: the same against the one-hot of the requested class."""
    torch.manual_seed(0)
    real, fake = torch.randn(4, 4), torch.randn(4, 4)
    real_cls, fake_cls = torch.tensor([0, 1, 2, 0]), torch.full((4,), 3)

    def bce(logits, targets):
        s = torch.sigmoid(logits)
        return -(targets * s.log() + (1 - targets) * (1 - s).log()).mean()

    one_hot = torch.eye(4)
    expected = bce(real, 0.9 * one_hot[real_cls]) + bce(fake, one_hot[fake_cls])
    assert d_categorical(real, fake, real_cls, fake_cls, real_target=0.9).item() == pytest.approx(expected.item(), rel=1e-5)
    assert d_categorical(real, None, real_cls, None).item() == pytest.approx(bce(real, one_hot[real_cls]).item(), rel=1e-5)
    assert g_categorical(fake, real_cls).item() == pytest.approx(bce(fake, one_hot[real_cls]).item(), rel=1e-5)


class Identity2d(nn.Module):
    def forward(self, x):
        return x


class PerfectAutoencoderGenerator(nn.Module):
    """A 'generator' whose decoder inverts the encoder exactly (both identities)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.decoder = Identity2d()

    def forward(self, z, labels):
        return torch.tanh(self.scale * z).view(z.shape[0], 1, 4, 4)


class IdentityEncoderDiscriminator(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.encoder = Identity2d()
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16, k + 1))

    def forward(self, x):
        return self.classifier(self.encoder(x))


def make_artgan(generator, discriminator, **kwargs):
    adam = lambda params: torch.optim.Adam(params, 1e-3)  # noqa: E731
    loss = GANLoss(d_categorical, g_categorical, True, "categorical")
    return ArtGAN(generator, discriminator, Normal(16), loss, {"discriminator": adam, "generator": adam},
                  num_classes=3, class_names=["a", "b", "c"], **kwargs)


def test_reconstruction_is_zero_for_a_perfect_autoencoder_and_positive_otherwise():
    torch.manual_seed(0)
    x, labels = torch.rand(8, 1, 4, 4) * 2 - 1, torch.arange(8) % 3
    model = make_artgan(PerfectAutoencoderGenerator(), IdentityEncoderDiscriminator(3))
    fake = model.generate(model.noise.sample(8), labels)
    model.d_step(x, labels, fake.detach(), labels)
    terms = model.g_step(fake, labels, x, labels)
    assert terms["recon_loss"].item() == 0.0
    assert terms["g_loss"].item() == pytest.approx(terms["g_adv"].item())
    assert reconstruction_loss(x, x).item() == 0.0
    # real ArtGAN nets at init do not reconstruct: the term is positive and reaches the decoder
    g = ArtGANGenerator(16, 3, image_size=16, channels=1, width=4)
    d = ArtGANDiscriminator(3, image_size=16, channels=1, width=4)
    model = make_artgan(g, d, reconstruction_weight=2.0)
    x = torch.rand(8, 1, 16, 16) * 2 - 1
    fake = model.generate(model.noise.sample(8), labels)
    model.d_step(x, labels, fake.detach(), labels)
    terms = model.g_step(fake, labels, x, labels)
    assert terms["recon_loss"].item() > 0
    assert terms["g_loss"].item() == pytest.approx(terms["g_adv"].item() + 2 * terms["recon_loss"].item(), rel=1e-5)
    # generator-side term: it trains the shared decoder, not Enc
    (grad,) = torch.autograd.grad(terms["g_loss"] - terms["g_adv"], next(g.decoder.parameters()))  # its input layer
    assert grad.abs().sum() > 0
    assert not any(p.grad is not None and p.grad.abs().sum() > 0 for p in d.encoder.parameters())


def test_generator_reconstruction_runs_the_encoder_after_the_discriminator_update_on_clean_images():
    torch.manual_seed(0)
    g = ArtGANGenerator(16, 3, image_size=16, channels=1, width=4)
    d = ArtGANDiscriminator(3, image_size=16, channels=1, width=4)
    model = make_artgan(g, d, instance_noise=1.0, instance_noise_on="real")
    x, labels = torch.rand(8, 1, 16, 16) * 2 - 1, torch.arange(8) % 3
    fake = model.generate(model.noise.sample(8), labels)
    before = {k: v.clone() for k, v in d.encoder.state_dict().items()}
    terms = model.d_step(x, labels, fake.detach(), labels)
    terms["d_loss"].backward()
    torch.optim.SGD(d.parameters(), lr=0.5).step()  # D's update changes Enc
    assert any(not torch.equal(before[k], v) for k, v in d.encoder.state_dict().items())
    recon = model.g_step(fake, labels, x, labels)["recon_loss"]
    with torch.no_grad():
        expected = F.mse_loss(g.decoder(d.encoder(x)), x)  # the updated Enc, on the images without noise
    assert recon.item() == pytest.approx(expected.item(), rel=1e-6)


def test_reconstruction_on_discriminator_side_trains_the_encoder_only():
    torch.manual_seed(0)
    g = ArtGANGenerator(16, 3, image_size=16, channels=1, width=4)
    d = ArtGANDiscriminator(3, image_size=16, channels=1, width=4)
    model = make_artgan(g, d, reconstruction_updates="discriminator")
    x, labels = torch.rand(8, 1, 16, 16) * 2 - 1, torch.arange(8) % 3
    fake = model.generate(model.noise.sample(8), labels).detach()
    terms = model.d_step(x, labels, fake, labels)
    assert terms["recon_loss"].item() > 0
    terms["d_loss"].backward()
    assert next(d.encoder.parameters()).grad.abs().sum() > 0  # the encoder's input layer
    assert all(p.grad is None for p in g.parameters())


def test_artgan_label_flip_fraction():
    torch.manual_seed(0)
    model = make_artgan(ArtGANGenerator(16, 3, 16, 1, 4), ArtGANDiscriminator(3, 16, 1, 4), label_flip=0.05)
    n = 20000
    labels = torch.randint(0, 3, (n,))
    real = model.real_classes(labels)
    assert abs((real == 3).float().mean().item() - 0.05) < 0.006  # real -> "fake"
    assert ((real == labels) | (real == 3)).all()
    fake = model.fake_classes(n)
    assert abs(1 - (fake == 3).float().mean().item() - 0.05) < 0.006  # fake -> a random real class
    assert ((fake >= 0) & (fake <= 3)).all()


def test_wrong_objective_or_nets_are_user_errors():
    g, d = ArtGANGenerator(16, 3, 16, 1, 4), ArtGANDiscriminator(3, 16, 1, 4)
    hinge = GANLoss(d_bce, g_non_saturating, False, "hinge")
    adam = lambda params: torch.optim.Adam(params)  # noqa: E731
    with pytest.raises(UserError, match="loss=hinge"):
        ArtGAN(g, d, Normal(16), hinge, {"discriminator": adam, "generator": adam}, num_classes=3)
    categorical = GANLoss(d_categorical, g_categorical, True, "categorical")
    with refused("loss=categorical", "GAN", "model=artgan"):  # D with one output
        GAN(DCGANGenerator(16, 16, 1, 4), DCGANDiscriminator(16, 1, 4), Normal(16), categorical,
            {"discriminator": adam, "generator": adam})
    with refused("model=artgan", "`decoder`", "Linear"):
        make_artgan(nn.Linear(2, 2), d)
    with pytest.raises(UserError, match="reconstruction_updates='encoder'"):
        make_artgan(g, d, reconstruction_updates="encoder")


def read_rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_artgan_trains_with_every_knob_and_logs_its_terms(make_cfg, tmp_path):
    cfg = make_cfg(*TINY_ARTGAN, "data.image_size=32", "optimizer=rmsprop", "scheduler=piecewise",
                   "model.discriminator.dropout=0.3", "model.generator.dropout=0.1", "model.label_flip=0.05",
                   "loss.discriminator.real_target=0.9", "model.instance_noise=0.1", "model.instance_noise_decay=5",
                   "model.init=kaiming_dense_dcgan_conv", "model.reconstruction_updates=both")
    train(cfg)
    run = tmp_path / "run"
    logged = {k for row in read_rows(run / "metrics.csv") for k, v in row.items() if v}
    assert {"train/d_loss", "train/g_loss", "train/recon_loss", "train/d_real", "train/d_fake",
            "train/d_acc_real"} <= logged
    assert (run / "samples" / "final.png").is_file()


def test_artgan_at_64(make_cfg, tmp_path):
    train(make_cfg(*TINY_ARTGAN, "data.image_size=64", "trainer.max_epochs=1", "trainer.limit_train_batches=2"))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["batches_seen"] == 2


class GeneratorSnapshots(L.Callback):
    """Generator weights and optimiser step count at the end of every epoch."""

    def __init__(self):
        self.weights, self.steps = [], []

    def on_train_start(self, trainer, pl_module):
        self.initial = [p.detach().clone() for p in pl_module.generator.parameters()]

    def on_train_epoch_end(self, trainer, pl_module):
        self.weights.append([p.detach().clone() for p in pl_module.generator.parameters()])
        self.steps.append(trainer.global_step)


def fit(cfg, *callbacks):
    L.seed_everything(cfg.seed, verbose=False)
    dm = build_datamodule(cfg)
    model = build_model(cfg)
    trainer = L.Trainer(accelerator="cpu", max_epochs=cfg.trainer.max_epochs, limit_train_batches=3,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=list(callbacks), log_every_n_steps=1)
    trainer.fit(model, datamodule=dm)
    return model, trainer


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_pretraining_skips_generator_updates(make_cfg):
    snap = GeneratorSnapshots()
    cfg = make_cfg(*TINY_ARTGAN, "data.image_size=16", "model.pretrain_epochs=2", "trainer.max_epochs=3")
    model, trainer = fit(cfg, snap)
    # epochs 0 and 1: D only (one step per batch), G untouched; epoch 2: D and G alternate
    assert snap.steps == [3, 6, 12]
    assert same(snap.weights[0], snap.initial) and same(snap.weights[1], snap.initial)
    assert not same(snap.weights[2], snap.initial)
    assert model.pretrain_batches == 6 and model.batches_seen == 9


def test_extra_generator_update_when_discriminator_dominates(make_cfg):
    # threshold above any possible loss: D always "too strong", every batch gets one extra G update
    cfg = make_cfg(*TINY_ARTGAN, "data.image_size=16", "model.extra_g_when=d_loss",
                   "model.extra_g_threshold=1e9", "trainer.max_epochs=1")
    model, trainer = fit(cfg)
    assert model.extra_g_updates == 3 and trainer.global_step == 3 * 3
    cfg = make_cfg(*TINY_ARTGAN, "data.image_size=16", "model.extra_g_when=d_acc",
                   "model.extra_g_threshold=1.0", "trainer.max_epochs=1")
    model, trainer = fit(cfg)
    assert model.extra_g_updates == 0 and trainer.global_step == 3 * 2  # accuracy is never above 1
    cfg = make_cfg(*TINY_ARTGAN, "data.image_size=16", "model.extra_g_when=d_adv_loss",
                   "model.extra_g_threshold=1e9", "trainer.max_epochs=1")
    model, trainer = fit(cfg)
    assert model.extra_g_updates == 3 and trainer.global_step == 3 * 3


@pytest.mark.parametrize("k", [10, 27])
def test_real_vs_generated_loss_keeps_its_scale_as_the_classes_grow(k):
    # D undecided between real and generated (fake output 0), sure of the K class outputs: the K+1-way
    # loss is the undecided part diluted over K+1 outputs; the real-vs-generated loss is log 2 for any K
    real_logits, fake_logits = torch.full((4, k + 1), -20.0), torch.full((4, k + 1), -20.0)
    real_logits[:, 0] = 20.0  # class 0, right
    real_logits[:, -1] = fake_logits[:, -1] = 0.0
    labels = torch.zeros(4, dtype=torch.long)
    k_way = d_categorical(real_logits, fake_logits, labels, torch.full((4,), k))
    assert k_way.item() == pytest.approx(2 * math.log(2) / (k + 1), rel=1e-4)
    assert adversarial_loss(real_logits[:, -1], fake_logits[:, -1]).item() == pytest.approx(math.log(2), rel=1e-6)


def test_artgan_state_is_checkpointed_and_resumed(make_cfg, tmp_path):
    cfg = make_cfg(*TINY_ARTGAN, "data.image_size=16", "model.pretrain_epochs=1", "model.extra_g_when=d_loss",
                   "model.extra_g_threshold=1e9")
    train(cfg)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["artgan"] == {"pretrain_batches": 3, "extra_g_updates": 3}
    cfg = make_cfg(*TINY_ARTGAN, "data.image_size=16", "model.pretrain_epochs=1", "model.extra_g_when=d_loss",
                   "model.extra_g_threshold=1e9", "trainer.max_epochs=3", f"ckpt_path={ckpt}",
                   run_dir=tmp_path / "resumed")
    train(cfg)
    state = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["artgan"] == {"pretrain_batches": 3, "extra_g_updates": 6}


@pytest.mark.parametrize("experiment,data", [("artgan_wikiart", "wikiart_genre"), ("artgan_cifar10", "cifar10")])
def test_study_presets_compose(experiment, data):
    from tests.conftest import compose_config

    cfg = compose_config([f"experiment={experiment}"])
    assert cfg.model._target_ == "gan_lab.models.ArtGAN" and cfg.data.image_size == 64
    assert cfg.data._target_ == compose_config([f"data={data}"]).data._target_  # the study's data
    assert cfg.optimizer.discriminator.alpha == 0.9 and cfg.data.batch_size == 128
