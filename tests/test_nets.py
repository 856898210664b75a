"""DCGAN nets: shapes for every supported size and channel count, init, clear size errors."""
from __future__ import annotations

import pytest
import torch

from gan_lab.errors import UserError
from gan_lab.nets import DCGANDiscriminator, DCGANGenerator
from gan_lab.nets.artgan import ArtGANGenerator
from gan_lab.nets.conditional import ConditionalDCGANGenerator, MLPConditionalGenerator
from gan_lab.nets.dcgan import SUPPORTED_SIZES
from tests.conftest import refused


@pytest.mark.parametrize("size", SUPPORTED_SIZES)
@pytest.mark.parametrize("channels", [1, 3])
def test_dcgan_shapes(size, channels):
    g = DCGANGenerator(latent_dim=8, image_size=size, channels=channels, width=4)
    d = DCGANDiscriminator(image_size=size, channels=channels, width=4)
    x = g(torch.randn(2, 8))
    assert x.shape == (2, channels, size, size)
    assert x.min() >= -1 and x.max() <= 1
    assert d(x).shape == (2,)


def test_dcgan64_matches_the_paper_layout():
    g = DCGANGenerator(latent_dim=100, image_size=64, channels=3, width=64)
    convs = [m for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [c.out_channels for c in convs] == [512, 256, 128, 64, 3]
    d = DCGANDiscriminator(image_size=64, channels=3, width=64)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]


def test_dcgan_init_statistics():
    g = DCGANGenerator(latent_dim=100, image_size=64, channels=3, width=64)
    w = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)])
    assert abs(w.mean().item()) < 1e-3 and w.std().item() == pytest.approx(0.02, rel=0.05)
    bn = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert bn.mean().item() == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("norm", ["instance", "layer", "none"])
def test_discriminator_norm_options(norm):
    d = DCGANDiscriminator(image_size=32, channels=1, width=4, norm=norm, dropout=0.2)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())
    assert d(torch.randn(3, 1, 32, 32)).shape == (3,)


def test_unsupported_size_names_the_allowed_sizes():
    with refused("image_size=48", "16, 32, 64, 128, 256"):
        DCGANGenerator(latent_dim=8, image_size=48, channels=3)
    with pytest.raises(UserError, match="norm='group'"):
        DCGANDiscriminator(image_size=32, norm="group")


@pytest.mark.parametrize("make", [
    lambda: MLPConditionalGenerator(8, 5, image_size=8, channels=1, hidden=(16, 16)),
    lambda: MLPConditionalGenerator(8, 5, image_size=8, channels=1, hidden=(16, 16), label_encoding="embedding"),
    lambda: ConditionalDCGANGenerator(8, 5, image_size=16, channels=3, width=4),
    lambda: ArtGANGenerator(8, 5, image_size=16, channels=3, width=4),
], ids=["mlp-one-hot", "mlp-embedding", "cdcgan", "artgan"])
def test_conditional_generators_take_class_weights(make):
    """They say so (``generate``'s class_blend reads it), and do: a one-hot weight row is that class; a blend of
    two classes is neither (class interpolation)."""
    torch.manual_seed(0)
    g = make().eval()
    assert g.takes_class_weights
    z, labels = torch.randn(3, 8), torch.tensor([0, 2, 4])
    weights = torch.nn.functional.one_hot(labels, 5).float()
    with torch.no_grad():
        assert torch.allclose(g(z, labels), g(z, weights), atol=1e-6)
        mixed = g(z, 0.5 * weights + 0.5 * torch.nn.functional.one_hot(torch.tensor([1, 1, 1]), 5).float())
    assert not torch.allclose(mixed, g(z, labels), atol=1e-4)
    with pytest.raises(ValueError, match=r"shape \[N, 5\]"):
        g(z, torch.ones(3, 4))
