"""The study presets build the reports' own nets and settings.

The layer tables below are transcribed from the reports (``shared/seeds``: the Pokemon report's
Figures 3 and 8 give every layer's output shape and parameter count; the ArtGAN reports give the
shapes of zNet, Dec, Enc and clsNet). Each preset is composed as ``python -m gan_lab.run
experiment=<preset>`` would compose it, its nets are built from the config, and every layer that
computes something is compared with the table, in order. The settings tables of
``experiments/<study>/README.md`` are checked row by row against the composed configs.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn as nn
import yaml
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

import gan_lab  # noqa: F401 - registers the ${add:...} resolver
from gan_lab.build import build_datamodule, build_model
from tests.conftest import compose_config, layer_table

ROOT = Path(__file__).resolve().parents[1]

# --- the reports' tables: (layer type, output shape without the batch, parameters) ------------

#: Pokemon report, Figure 3a: the DCGAN generator (latent 100 -> 3@256x256)
POKEMON_DCGAN_G = [
    ("ConvTranspose2d", (2048, 4, 4), 3_276_800), ("BatchNorm2d", (2048, 4, 4), 4_096), ("ReLU", (2048, 4, 4), 0),
    ("ConvTranspose2d", (1024, 8, 8), 33_554_432), ("BatchNorm2d", (1024, 8, 8), 2_048), ("ReLU", (1024, 8, 8), 0),
    ("ConvTranspose2d", (512, 16, 16), 8_388_608), ("BatchNorm2d", (512, 16, 16), 1_024), ("ReLU", (512, 16, 16), 0),
    ("ConvTranspose2d", (256, 32, 32), 2_097_152), ("BatchNorm2d", (256, 32, 32), 512), ("ReLU", (256, 32, 32), 0),
    ("ConvTranspose2d", (128, 64, 64), 524_288), ("BatchNorm2d", (128, 64, 64), 256), ("ReLU", (128, 64, 64), 0),
    ("ConvTranspose2d", (64, 128, 128), 131_072), ("BatchNorm2d", (64, 128, 128), 128), ("ReLU", (64, 128, 128), 0),
    ("ConvTranspose2d", (3, 256, 256), 3_072), ("Tanh", (3, 256, 256), 0),
]
#: Figure 3b: the DCGAN discriminator (3@256x256 -> 1); its final Sigmoid-16 is the loss's
#: BCE-with-logits (checked separately)
POKEMON_DCGAN_D = [
    ("Conv2d", (64, 64, 64), 6_912), ("LeakyReLU", (64, 64, 64), 0),
    ("Conv2d", (128, 32, 32), 131_072), ("BatchNorm2d", (128, 32, 32), 256), ("LeakyReLU", (128, 32, 32), 0),
    ("Conv2d", (128, 16, 16), 262_144), ("BatchNorm2d", (128, 16, 16), 256), ("LeakyReLU", (128, 16, 16), 0),
    ("Conv2d", (128, 8, 8), 262_144), ("BatchNorm2d", (128, 8, 8), 256), ("LeakyReLU", (128, 8, 8), 0),
    ("Conv2d", (128, 4, 4), 262_144), ("BatchNorm2d", (128, 4, 4), 256), ("LeakyReLU", (128, 4, 4), 0),
    ("Conv2d", (1, 1, 1), 2_048),
]
#: Figure 8a: the WGAN generator (latent 64 -> 3@128x128)
POKEMON_WGAN_G = [
    ("Linear", (4096,), 266_240), ("BatchNorm1d", (4096,), 8_192),
    ("ConvTranspose2d", (512, 4, 4), 3_276_800), ("BatchNorm2d", (512, 4, 4), 1_024), ("ReLU", (512, 4, 4), 0),
    ("Dropout", (512, 4, 4), 0),
    ("ConvTranspose2d", (256, 8, 8), 3_276_800), ("BatchNorm2d", (256, 8, 8), 512), ("ReLU", (256, 8, 8), 0),
    ("Dropout", (256, 8, 8), 0),
    ("ConvTranspose2d", (128, 16, 16), 819_200), ("BatchNorm2d", (128, 16, 16), 256), ("ReLU", (128, 16, 16), 0),
    ("ConvTranspose2d", (64, 32, 32), 204_800), ("BatchNorm2d", (64, 32, 32), 128), ("ReLU", (64, 32, 32), 0),
    ("ConvTranspose2d", (32, 64, 64), 51_200), ("BatchNorm2d", (32, 64, 64), 64), ("ReLU", (32, 64, 64), 0),
    ("ConvTranspose2d", (3, 128, 128), 1_536), ("Tanh", (3, 128, 128), 0),
]
#: Figure 8b: the WGAN critic (3@128x128 -> 1)
POKEMON_WGAN_D = [
    ("Conv2d", (32, 32, 32), 3_456), ("LeakyReLU", (32, 32, 32), 0),
    ("Conv2d", (64, 16, 16), 32_768), ("BatchNorm2d", (64, 16, 16), 128), ("LeakyReLU", (64, 16, 16), 0),
    ("Conv2d", (64, 8, 8), 65_536), ("BatchNorm2d", (64, 8, 8), 128), ("LeakyReLU", (64, 8, 8), 0),
    ("Conv2d", (64, 4, 4), 65_536), ("BatchNorm2d", (64, 4, 4), 128), ("LeakyReLU", (64, 4, 4), 0),
    ("Conv2d", (1, 1, 1), 1_024),
]
#: the reports' totals of their parameter tables
POKEMON_TOTALS = {"pokemon_dcgan256": (47_983_488, 927_488), "pokemon_wgan_gp128": (7_906_752, 168_704)}

#: ArtGAN reports (000 Fig. 1-2, 002 section 2.1), 64x64 images: the shapes of every block. G: six
#: transposed convolutions, each but the last followed by batch norm, ReLU, a sigmoid output; D:
#: five convolutions, each but the first followed by batch norm, LeakyReLU, then one dense layer.
ARTGAN_G = [
    ("ConvTranspose2d", (1024, 4, 4)), ("BatchNorm2d", (1024, 4, 4)), ("ReLU", (1024, 4, 4)),   # zNet
    ("ConvTranspose2d", (512, 8, 8)), ("BatchNorm2d", (512, 8, 8)), ("ReLU", (512, 8, 8)),
    ("ConvTranspose2d", (256, 16, 16)), ("BatchNorm2d", (256, 16, 16)), ("ReLU", (256, 16, 16)),  # decoder
    ("ConvTranspose2d", (128, 32, 32)), ("BatchNorm2d", (128, 32, 32)), ("ReLU", (128, 32, 32)),
    ("ConvTranspose2d", (128, 32, 32)), ("BatchNorm2d", (128, 32, 32)), ("ReLU", (128, 32, 32)),
    ("ConvTranspose2d", (3, 64, 64)), ("Sigmoid", (3, 64, 64)),
]
ARTGAN_D = [
    ("Conv2d", (128, 32, 32)), ("LeakyReLU", (128, 32, 32)),                                      # encoder
    ("Conv2d", (128, 32, 32)), ("BatchNorm2d", (128, 32, 32)), ("LeakyReLU", (128, 32, 32)),
    ("Conv2d", (256, 16, 16)), ("BatchNorm2d", (256, 16, 16)), ("LeakyReLU", (256, 16, 16)),
    ("Conv2d", (512, 8, 8)), ("BatchNorm2d", (512, 8, 8)), ("LeakyReLU", (512, 8, 8)),
    ("Conv2d", (1024, 4, 4)), ("BatchNorm2d", (1024, 4, 4)), ("LeakyReLU", (1024, 4, 4)),       # clsNet
    ("Flatten", (1024 * 16,)), ("Linear", ("K+1",)),
]

# --- helpers -----------------------------------------------------------------------------------


def preset_nets(preset: str, num_classes: int = 10, channels: int = 3, *overrides: str):
    """The generator and discriminator a preset builds (the dataset's facts filled in by hand,
    since the real datasets are not needed to build the nets)."""
    cfg = compose_config([f"experiment={preset}", *overrides], "/nonexistent/run")
    with open_dict(cfg):
        cfg.data.channels, cfg.data.num_classes = channels, num_classes
        cfg.data.class_names = [f"c{i}" for i in range(num_classes)]
    return cfg, instantiate(cfg.model.generator), instantiate(cfg.model.discriminator)


# --- Pokemon: every layer as in Figures 3 and 8 ------------------------------------------------


@pytest.mark.parametrize("preset,g_table,d_table,latent,size", [
    ("pokemon_dcgan256", POKEMON_DCGAN_G, POKEMON_DCGAN_D, 100, 256),
    ("pokemon_wgan_gp128", POKEMON_WGAN_G, POKEMON_WGAN_D, 64, 128),
])
def test_pokemon_presets_build_the_reports_nets_layer_by_layer(preset, g_table, d_table, latent, size):
    cfg, g, d = preset_nets(preset)
    assert cfg.noise.latent_dim == latent and cfg.data.image_size == size
    assert layer_table(g, torch.randn(2, latent)) == g_table
    assert layer_table(d, torch.randn(2, 3, size, size)) == d_table
    g_total, d_total = POKEMON_TOTALS[preset]
    assert sum(p.numel() for p in g.parameters()) == g_total
    assert sum(p.numel() for p in d.parameters()) == d_total


def test_pokemon_dcgan_sigmoid_is_the_bce_with_logits_of_the_loss():
    """The report's D ends in a Sigmoid read by BCE: here D returns the logit and the loss is BCE."""
    cfg, _, _ = preset_nets("pokemon_dcgan256")
    loss = instantiate(cfg.loss)
    assert loss.probability and cfg.loss.discriminator._target_ == "gan_lab.losses.d_bce"
    logit = torch.tensor([0.3, -1.2])
    expected = -(torch.log(torch.sigmoid(logit)).mean() + torch.log(1 - torch.sigmoid(-logit)).mean())
    assert loss.discriminator(logit, -logit).item() == pytest.approx(expected.item(), rel=1e-6)


def test_pokemon_wgan_critic_has_the_reports_batchnorm_and_layer_norm_is_one_override():
    _, _, d = preset_nets("pokemon_wgan_gp128")
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d.modules()) == 3
    _, _, d = preset_nets("pokemon_wgan_gp128", 10, 3, "model.discriminator.norm=layer")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in d.modules())
    assert sum(isinstance(m, nn.GroupNorm) for m in d.modules()) == 3


# --- ArtGAN: the reports' shapes, a sigmoid generator ------------------------------------------


@pytest.mark.parametrize("preset,classes", [("artgan_wikiart", 10), ("artgan_wikiart_style", 27),
                                            ("artgan_wikiart_artist", 23), ("artgan_cifar10", 10)])
def test_artgan_presets_build_the_reports_shapes(preset, classes):
    cfg, g, d = preset_nets(preset, classes)
    assert cfg.noise.latent_dim == 100 and cfg.data.image_size == 64
    labels = torch.arange(2) % classes
    g_rows = [(t, s) for t, s, _ in layer_table(g, torch.randn(2, 100), labels)]
    if cfg.model.generator.dropout:  # the artist preset's dropout follows every decoder block
        g_rows = [r for r in g_rows if r[0] != "Dropout"]
    assert g_rows == ARTGAN_G
    d_rows = [(t, s) for t, s, _ in layer_table(d, torch.randn(2, 3, 64, 64)) if t != "Dropout"]
    assert d_rows == [(t, (classes + 1,) if s == ("K+1",) else s) for t, s in ARTGAN_D]
    # dropout where the artist model had it (report 000): after the encoder's and the decoder's blocks,
    # none in clsNet or zNet; none in the other presets
    dropouts = {name: sum(isinstance(m, nn.Dropout) for m in net.modules())
                for name, net in (("encoder", d.encoder), ("clsNet", d.classifier), ("decoder", g.decoder),
                                  ("zNet", g.znet))}
    artist = preset == "artgan_wikiart_artist"
    assert dropouts == {"encoder": 4 if artist else 0, "clsNet": 0, "decoder": 3 if artist else 0, "zNet": 0}
    # zNet's input is the noise concatenated with the one-hot class (100 + K channels)
    first = next(m for m in g.znet.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))
    assert first.in_channels == 100 + classes


# --- the settings tables of the study READMEs ----------------------------------------------------

STUDIES = ["pokemon", "artgan", "dcgan_study", "monet_noise"]
ROW = re.compile(r"^\|(?P<setting>[^|]+)\|\s*`(?P<key>[\w.\[\]]+)`\s*\|\s*`(?P<value>[^`]*)`\s*\|(?P<source>[^|]+)\|\s*$")
HEADING = re.compile(r"^#+ .*`experiment=(?P<preset>\w+)`")


def fidelity_rows() -> list[tuple[str, str, str, str, str]]:
    """(README:line, preset, key, value, source) of every settings row that names a config key."""
    rows = []
    for study in STUDIES:
        path = ROOT / "experiments" / study / "README.md"
        preset = None
        for number, line in enumerate(path.read_text().splitlines(), 1):
            heading = HEADING.match(line)
            if heading:
                preset = heading["preset"]
            elif line.startswith("#"):
                preset = None
            row = ROW.match(line)
            if row and preset:
                rows.append((f"{path.relative_to(ROOT)}:{number}", preset, row["key"], row["value"],
                             row["source"].strip()))
    return rows


ROWS = fidelity_rows()


def test_every_study_has_a_settings_table():
    assert {r[1] for r in ROWS} >= {"pokemon_dcgan256", "pokemon_wgan_gp128", "pokemon_pggan128", "artgan_wikiart",
                                    "artgan_cifar10", "dcgan_celeba32", "dcgan_celeba64", "dcgan_cifar10_64", "cdcgan_mnist", "cgan_mnist",
                                    "monet_noise"}
    assert all(r[4].startswith(("as reported", "not in the report")) for r in ROWS), \
        [r[0] for r in ROWS if not r[4].startswith(("as reported", "not in the report"))]


@functools.cache
def preset_config(preset: str) -> DictConfig:
    """``experiment=<preset>`` composed once for all its rows (only read)."""
    return compose_config([f"experiment={preset}"], "/nonexistent/run")


@pytest.mark.parametrize("where,preset,key,value,source", ROWS, ids=[f"{r[0]} {r[2]}" for r in ROWS])
def test_settings_row_is_the_composed_config(where, preset, key, value, source):
    found = OmegaConf.select(preset_config(preset), key, throw_on_missing=True)
    found = OmegaConf.to_container(found, resolve=True) if OmegaConf.is_config(found) else found
    assert found == yaml.safe_load(value), f"{where}: {key} is {found!r} in experiment={preset}"


def test_artgan_pretraining_comes_before_the_adversarial_epochs():
    """10 D-only epochs, then 90 adversarial ones; changing the pre-training keeps the 90."""
    cfg = compose_config(["experiment=artgan_wikiart"], "/nonexistent/run")
    assert cfg.model.pretrain_epochs == 10 and cfg.trainer.max_epochs == 100
    cfg = compose_config(["experiment=artgan_wikiart", "model.pretrain_epochs=3"], "/nonexistent/run")
    assert cfg.trainer.max_epochs == 93


def fit(cfg, *callbacks, batches: int = 1):
    """Train the composed config's model for ``trainer.max_epochs`` epochs of ``batches`` batches."""
    L.seed_everything(cfg.seed, verbose=False)
    dm = build_datamodule(cfg)
    model = build_model(cfg)
    trainer = L.Trainer(accelerator="cpu", max_epochs=cfg.trainer.max_epochs, limit_train_batches=batches,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=list(callbacks), log_every_n_steps=1)
    trainer.fit(model, datamodule=dm)
    return model, trainer


TINY_ARTGAN = ("model=artgan", "data.image_size=16", "model.generator.width=4", "model.samples_per_class=2")


def test_artgan_lr_table_counts_adversarial_epochs(make_cfg):
    """Two pre-training epochs, then two adversarial ones: the table has advanced by two epochs, not four."""
    cfg = make_cfg(*TINY_ARTGAN, "optimizer=rmsprop", "scheduler=piecewise",
                   "scheduler.discriminator.milestones=[0,2,4]", "scheduler.discriminator.lrs=[1e-3,1e-4,1e-5]",
                   "model.pretrain_epochs=2", "trainer.max_epochs=4")
    model, trainer = fit(cfg)
    # epochs 0-1 pre-train at 1e-3; epochs 2-3 are adversarial epochs 0-1, after which the table is
    # at its epoch 2 (1e-4); counting the pre-training epochs would put it at epoch 4 (1e-5)
    assert trainer.current_epoch == 4 and model.pretrain_batches == 2
    assert [g["lr"] for g in trainer.optimizers[0].param_groups] == [pytest.approx(1e-4)]


class DiscriminatorInputs(L.Callback):
    """The smallest and largest pixel of every real and generated batch that reaches D's encoder."""

    def __init__(self):
        self.seen: list[tuple[float, float]] = []

    def on_fit_start(self, trainer, pl_module):
        pl_module.discriminator.encoder.register_forward_pre_hook(
            lambda m, args: self.seen.append((float(args[0].detach().min()), float(args[0].detach().max()))))


@pytest.mark.parametrize("output,low,high", [("sigmoid", 0.0, 1.0), ("tanh", -1.0, 1.0)])
def test_artgan_generator_output_sets_the_pixel_range_the_nets_train_in(make_cfg, output, low, high):
    """Sigmoid: D sees real and generated images in [0, 1] and the real digits' full range maps onto it;
    what leaves the model (grids, metrics, evaluation) is back in the data range [-1, 1]."""
    spy = DiscriminatorInputs()
    cfg = make_cfg(*TINY_ARTGAN, f"model.generator.output={output}", "trainer.max_epochs=1")
    model, _ = fit(cfg, spy, batches=2)
    assert spy.seen and all(low <= lo and hi <= high for lo, hi in spy.seen)
    assert min(lo for lo, _ in spy.seen) < low + 0.05  # the digits' background reaches the bottom
    z, labels = model.fixed_noise[:4], model.fixed_labels[:4]
    raw = model.generator.eval()(z, labels)
    samples = model.sample(z, labels)
    expected = raw * 2 - 1 if output == "sigmoid" else raw
    assert torch.allclose(samples, expected.clamp(-1, 1), atol=1e-6)
    assert samples.min() >= -1 and samples.max() <= 1


def test_instance_noise_on_real_only_leaves_generated_images_clean(make_cfg):
    """As the CIFAR-10 study: N(0, 1) on the real images only; the generated ones reach D as G made them."""
    spy = DiscriminatorInputs()
    cfg = make_cfg(*TINY_ARTGAN, "model.generator.output=sigmoid", "model.instance_noise=1.0",
                   "model.instance_noise_on=real", "model.reconstruction_weight=0", "trainer.max_epochs=1")
    fit(cfg, spy)
    # per batch: D update (real, fake), G update (fake)
    real, fake_d, fake_g = spy.seen
    assert real[0] < -1.0 and real[1] > 2.0                      # noisy real images
    assert 0.0 <= fake_d[0] and fake_d[1] <= 1.0 and 0.0 <= fake_g[0] and fake_g[1] <= 1.0
    spy = DiscriminatorInputs()
    fit(make_cfg(*TINY_ARTGAN, "model.generator.output=sigmoid", "model.instance_noise=1.0",
                 "model.reconstruction_weight=0", "trainer.max_epochs=1"), spy)
    assert all(lo < -1.0 and hi > 2.0 for lo, hi in spy.seen)   # real_and_fake: every input is noisy


def test_artgan_d_scores_are_one_per_image_and_read_the_fake_output(make_cfg):
    """Evaluation's D(x) for ArtGAN: 1 - p(fake) per image, from the data range, not the mean over K+1 outputs."""
    cfg = make_cfg(*TINY_ARTGAN, "model.generator.output=sigmoid", "trainer.max_epochs=1")
    model, _ = fit(cfg)
    model.eval()
    images = torch.rand(5, 1, 16, 16) * 2 - 1
    labels = torch.zeros(5, dtype=torch.long)
    scores = model.d_scores(images, labels)
    logits = model.discriminator((images + 1) / 2)
    assert scores.shape == (5,)
    assert torch.allclose(scores, 1 - torch.sigmoid(logits[:, -1]), atol=1e-6)
    assert not torch.allclose(scores, torch.sigmoid(logits).mean(1), atol=1e-3)


def test_monet_generator_loss_uses_the_smoothed_real_target(make_cfg):
    """Algorithm 3: G's loss is real_loss(D(G(z))) with the real target 0.8, not 1."""
    cfg = compose_config(["experiment=monet_noise"], "/nonexistent/run")
    loss = instantiate(cfg.loss)
    logits = torch.tensor([0.5, -0.5, 2.0])
    assert loss.generator(logits).item() == pytest.approx(
        torch.nn.functional.binary_cross_entropy(torch.sigmoid(logits), torch.full((3,), 0.8)).item(), rel=1e-6)
