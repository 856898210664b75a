"""DCGAN generator and discriminator (Radford et al. 2016) for square images of any power-of-two size.

The number of up/down-sampling blocks follows from ``image_size``: the generator starts at
4x4 from a 1x1 latent and doubles the resolution per block; the discriminator mirrors it down to
4x4 and ends in one logit. Widths follow the paper: ``width * 2^k`` channels, capped at
``width * max_mult``.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor

from gan_lab.errors import UserError
from gan_lab.nets.init import dcgan_init

SUPPORTED_SIZES = (16, 32, 64, 128, 256)


def check_image_size(image_size: int, net: str, sizes: tuple[int, ...] = SUPPORTED_SIZES) -> int:
    """Number of doublings between 4x4 and ``image_size``; a clear error for unsupported sizes."""
    if image_size not in sizes:
        raise UserError(f"image_size={image_size} is not supported by the {net}; use one of "
                        f"{', '.join(map(str, sizes))} (e.g. data.image_size=64).")
    return int(math.log2(image_size)) - 2


def norm_layer(kind: str, channels: int, resolution: int) -> nn.Module:
    """Normalisation after a conv: ``batch`` (DCGAN), ``instance``, ``layer`` (WGAN-GP critic), ``none``."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "layer":
        return nn.GroupNorm(1, channels)  # LayerNorm over (C, H, W), independent of the resolution
    if kind == "none":
        return nn.Identity()
    raise UserError(f"norm={kind!r} is unknown; use one of batch, instance, layer, none.")


def _mults(blocks: int, max_mult: int) -> list[int]:
    """Channel multipliers from the 4x4 end outwards: e.g. 64px -> [8, 4, 2, 1]."""
    return [min(2 ** (blocks - 1 - i), max_mult) for i in range(blocks)]


class DCGANGenerator(nn.Module):
    """z [N, latent_dim] -> image [N, channels, image_size, image_size] in [-1, 1] (tanh)."""

    def __init__(self, latent_dim: int, image_size: int = 64, channels: int = 3, width: int = 64,
                 max_mult: int = 8, norm: str = "batch", init: bool = True) -> None:
        super().__init__()
        blocks = check_image_size(image_size, "DCGAN generator")
        self.latent_dim, self.image_size, self.channels = latent_dim, image_size, channels
        mults = _mults(blocks, max_mult)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, width * mults[0], 4, 1, 0, bias=False),  # 1 -> 4
            norm_layer(norm, width * mults[0], 4), nn.ReLU(True)]
        res = 4
        for i in range(1, blocks):
            res *= 2
            layers += [nn.ConvTranspose2d(width * mults[i - 1], width * mults[i], 4, 2, 1, bias=False),
                       norm_layer(norm, width * mults[i], res), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(width * mults[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        if init:
            self.apply(dcgan_init)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.view(z.shape[0], -1, 1, 1))


class DCGANDiscriminator(nn.Module):
    """image [N, channels, S, S] -> logits [N] (no sigmoid: the loss decides how to read them).

    ``norm`` picks the normalisation of the inner blocks (none on the first, as in the paper);
    ``spectral_norm`` wraps every conv in spectral normalisation; ``dropout`` follows each block.
    """

    def __init__(self, image_size: int = 64, channels: int = 3, width: int = 64, max_mult: int = 8,
                 norm: str = "batch", spectral_norm: bool = False, dropout: float = 0.0,
                 init: bool = True) -> None:
        super().__init__()
        blocks = check_image_size(image_size, "DCGAN discriminator")
        if not 0.0 <= dropout < 1.0:
            raise UserError(f"model.discriminator.dropout={dropout} must be in [0, 1); e.g. 0.3.")
        self.image_size, self.channels = image_size, channels
        mults = list(reversed(_mults(blocks, max_mult)))  # e.g. 64px -> [1, 2, 4, 8]
        sn = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        layers: list[nn.Module] = [sn(nn.Conv2d(channels, width * mults[0], 4, 2, 1, bias=False)),
                                   nn.LeakyReLU(0.2, True)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        res = image_size // 2
        for i in range(1, blocks):
            res //= 2
            layers += [sn(nn.Conv2d(width * mults[i - 1], width * mults[i], 4, 2, 1, bias=False)),
                       norm_layer(norm, width * mults[i], res), nn.LeakyReLU(0.2, True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
        self.features = nn.Sequential(*layers)  # -> [N, width * mults[-1], 4, 4]
        self.head = sn(nn.Conv2d(width * mults[-1], 1, 4, 1, 0, bias=False))
        self.feature_dim = width * mults[-1] * 16
        if init:
            self.apply(dcgan_init)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x)).view(x.shape[0])
