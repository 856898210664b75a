"""DCGAN generator and discriminator (Radford et al. 2016), configured by data: the block count follows
``image_size``; widths are ``width * 2^k`` capped at ``width * max_mult``, unless ``block_channels`` lists them."""
from __future__ import annotations

import math
from typing import Annotated, Sequence

import torch.nn as nn
from pydantic import Field
from torch import Tensor

from gan_lab.constraints import Count
from gan_lab.errors import UserError
from gan_lab.nets.init import dcgan_init

SUPPORTED_SIZES = (16, 32, 64, 128, 256)
NORM_LAYERS = {"batch": nn.BatchNorm2d, "instance": lambda c: nn.InstanceNorm2d(c, affine=True),
               "layer": lambda c: nn.GroupNorm(1, c),  # LayerNorm over (C, H, W), independent of the resolution
               "none": lambda c: nn.Identity()}
OUTPUTS = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


#: the probability that dropout zeroes a unit (1 would zero every one)
DropoutRate = Annotated[float, Field(ge=0, lt=1)]


def check_image_size(image_size: int, net: str) -> int:
    """Number of doublings between 4x4 and ``image_size``; raises UserError for unsupported sizes."""
    if image_size not in SUPPORTED_SIZES:
        raise UserError(f"image_size={image_size} is not supported by the {net}; use one of "
                        f"{', '.join(map(str, SUPPORTED_SIZES))} (e.g. data.image_size=64).")
    return int(math.log2(image_size)) - 2


def output_layer(kind: str) -> nn.Module:
    """The generator's last activation (``model.generator.output``): ``tanh`` (images in [-1, 1]) or ``sigmoid``."""
    if kind not in OUTPUTS:
        raise UserError(f"model.generator.output={kind!r} is unknown; use tanh (images in [-1, 1]) or sigmoid "
                        f"(images in [0, 1]).")
    return OUTPUTS[kind]()


def widths_per_block(given: Sequence[int] | None, default: list[int], key: str) -> list[int]:
    """The channels of every block: ``given`` (checked against the block count) or ``default``."""
    widths = default if given is None else [int(c) for c in given]
    if len(widths) != len(default):
        raise UserError(f"{key}={widths} lists {len(widths)} blocks but this image size needs {len(default)} "
                        f"(e.g. {key}={default}); or set {key}=null.")
    return widths


def norms_per_block(norm: str | Sequence[str], blocks: int, key: str, first: str | None = None) -> list[str]:
    """One normalisation name per block (:data:`NORM_LAYERS`: ``batch`` (DCGAN), ``instance``, ``layer`` (WGAN-GP
    critic), ``none``): ``norm`` as a list, or that name for every block (``first`` for the first)."""
    if isinstance(norm, str):
        norms = [first or norm] + [norm] * (blocks - 1)
    else:
        norms = [str(n) for n in norm]
        if len(norms) != blocks:
            raise UserError(f"{key}={norms} names {len(norms)} normalisations for {blocks} blocks; give one "
                            f"per block or a single name (e.g. {key}=batch).")
    unknown = [n for n in norms if n not in NORM_LAYERS]
    if unknown:
        raise UserError(f"{key}: norm={unknown[0]!r} is unknown; use one of {', '.join(NORM_LAYERS)}.")
    return norms


def channel_mults(blocks: int, max_mult: int) -> list[int]:
    """Channel multipliers from the 4x4 end outwards: e.g. 64px -> [8, 4, 2, 1]."""
    return [min(2 ** (blocks - 1 - i), max_mult) for i in range(blocks)]


class DCGANGenerator(nn.Module):
    """z [N, latent_dim] -> image [N, channels, image_size, image_size].

    Block ``i`` from the 4x4 end has ``width * min(2^(blocks-1-i), max_mult)`` channels unless ``block_channels``
    lists them (4x4 first); ``norm``: one name, or one per block; ``output``: ``tanh`` ([-1, 1]) or ``sigmoid``.
    """

    def __init__(self, latent_dim: Count, image_size: Count = 64, channels: Count = 3, width: Count = 64,
                 max_mult: Count = 8, norm: str | Sequence[str] = "batch", init: bool = True,
                 block_channels: Sequence[Count] | None = None, output: str = "tanh") -> None:
        super().__init__()
        blocks = check_image_size(image_size, "DCGAN generator")
        self.latent_dim, self.image_size, self.channels = latent_dim, image_size, channels
        widths = widths_per_block(block_channels, [width * m for m in channel_mults(blocks, max_mult)],
                                  "model.generator.block_channels")
        norms = norms_per_block(norm, blocks, "model.generator.norm")
        layers: list[nn.Module] = []
        for i, (in_ch, out_ch, kind) in enumerate(zip([latent_dim, *widths], widths, norms)):
            stride, padding = (1, 0) if i == 0 else (2, 1)  # 1x1 -> 4x4, then doubling
            layers += [nn.ConvTranspose2d(in_ch, out_ch, 4, stride, padding, bias=False),
                       NORM_LAYERS[kind](out_ch), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1, bias=False), output_layer(output)]
        self.output = output
        self.net = nn.Sequential(*layers)
        if init:
            self.apply(dcgan_init)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.view(z.shape[0], -1, 1, 1))


def stem_geometry(image_size: int, kernel: int, stride: int, net: str) -> tuple[int, int]:
    """``(padding, side)`` of the stem convolution: padding ``(kernel - stride) / 2`` divides the side exactly by
    ``stride``; raises UserError when it cannot, or when the output side is not a power of two >= 4."""
    check_image_size(image_size, net)
    if stride < 1 or kernel < stride or (kernel - stride) % 2:
        raise UserError(f"stem_kernel={kernel} with stem_stride={stride} cannot divide the image side exactly; "
                        f"the kernel must be the stride plus an even number (e.g. 4 and 2, or 6 and 4).")
    side = image_size // stride
    if image_size % stride or side < 4 or side & (side - 1):
        raise UserError(f"stem_stride={stride} turns image_size={image_size} into {image_size / stride:g}, "
                        f"not a power of two >= 4; use stem_stride=2 or a larger data.image_size.")
    return (kernel - stride) // 2, side


class DCGANDiscriminator(nn.Module):
    """image [N, channels, S, S] -> logits [N] (no sigmoid).

    A ``stem_kernel`` x ``stem_kernel`` stride-``stem_stride`` stem, 4x4 stride-2 blocks down to 4x4, then a 4x4
    conv to one logit. Block ``i`` has ``width * min(2^i, max_mult)`` channels unless ``block_channels`` lists
    them (stem first); ``norm``: the inner blocks' (none on the stem), or one per block, stem first;
    ``spectral_norm`` wraps every conv; ``dropout`` follows each block.
    """

    def __init__(self, image_size: Count = 64, channels: Count = 3, width: Count = 64, max_mult: Count = 8,
                 norm: str | Sequence[str] = "batch", spectral_norm: bool = False, dropout: DropoutRate = 0.0,
                 init: bool = True, block_channels: Sequence[Count] | None = None, stem_kernel: Count = 4,
                 stem_stride: Count = 2) -> None:
        super().__init__()
        padding, side = stem_geometry(image_size, stem_kernel, stem_stride, "DCGAN discriminator")
        blocks = int(math.log2(side)) - 1  # the stem, then halvings down to 4x4
        self.image_size, self.channels = image_size, channels
        widths = widths_per_block(block_channels, [width * min(2 ** i, max_mult) for i in range(blocks)],
                                  "model.discriminator.block_channels")
        norms = norms_per_block(norm, blocks, "model.discriminator.norm", first="none")
        sn = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        layers: list[nn.Module] = []
        for i, (in_ch, out_ch, kind) in enumerate(zip([channels, *widths], widths, norms)):
            conv = (nn.Conv2d(in_ch, out_ch, stem_kernel, stem_stride, padding, bias=False) if i == 0
                    else nn.Conv2d(in_ch, out_ch, 4, 2, 1, bias=False))
            layers += [sn(conv), NORM_LAYERS[kind](out_ch), nn.LeakyReLU(0.2, True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
        self.features = nn.Sequential(*[m for m in layers if not isinstance(m, nn.Identity)])  # -> [N, C, 4, 4]
        self.head = sn(nn.Conv2d(widths[-1], 1, 4, 1, 0, bias=False))
        if init:
            self.apply(dcgan_init)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x)).view(x.shape[0])
