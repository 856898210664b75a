"""Progressive GAN nets (Karras et al. 2018): every block from 4x4 to ``max_resolution``, run up to ``resolution``
with the newest one faded in by ``alpha`` (a number, or a 0-dim float32 device tensor). Layers use the equalized
learning rate; channels per resolution R are ``min(fmap_base / R, fmap_max)``."""
from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from gan_lab.constraints import Count
from gan_lab.errors import UserError

#: the last resolution of a progressive net (a power of two from 4 on)
MaxResolution = Annotated[int, Field(ge=4)]

LRELU = 0.2


def check_resolution(resolution: int, max_resolution: int) -> int:
    """Index of ``resolution`` among 4, 8, ..., ``max_resolution``; raises UserError otherwise."""
    if resolution < 4 or resolution > max_resolution or resolution & (resolution - 1):
        raise UserError(f"resolution={resolution} must be a power of two between 4 and {max_resolution}.")
    return int(math.log2(resolution)) - 2


def fading(alpha: float | Tensor) -> bool:
    """Whether the newest layers blend with the previous resolution's (a tensor alpha always does)."""
    return isinstance(alpha, Tensor) or alpha < 1.0


def fade(old: Tensor, new: Tensor, alpha: float | Tensor) -> Tensor:
    """``old + alpha * (new - old)``; a tensor alpha blends in float32 and casts back to ``new``'s dtype."""
    if not isinstance(alpha, Tensor):
        return torch.lerp(old, new, float(alpha))
    return torch.lerp(old.float(), new.float(), alpha).to(new.dtype)


class EqualizedLinear(nn.Module):
    """Linear layer with equalized learning rate: ``y = x (w * c)^T + b``, ``c = gain / sqrt(in)``."""

    def __init__(self, in_features: int, out_features: int, gain: float = math.sqrt(2.0)) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = gain / math.sqrt(in_features)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, scale={self.scale:.4g}"


class EqualizedConv2d(nn.Module):
    """Same-padded conv with equalized learning rate: weight scaled by ``gain / sqrt(in * k * k)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, gain: float = math.sqrt(2.0)) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.scale = gain / math.sqrt(in_channels * kernel_size * kernel_size)
        self.padding = kernel_size // 2

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, kernel_size={k}, scale={self.scale:.4g}"


class PixelNorm(nn.Module):
    """Pixel-wise feature normalisation: each pixel's feature vector scaled to unit mean square."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class MinibatchStddev(nn.Module):
    """Appends one feature map: each feature's standard deviation over a group of samples, averaged
    over features and pixels. The group is the largest divisor of the batch not above ``group_size``."""

    def __init__(self, group_size: int = 4, eps: float = 1e-8) -> None:
        super().__init__()
        self.group_size, self.eps = int(group_size), eps

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        g = max(d for d in range(1, min(self.group_size, n) + 1) if n % d == 0)
        y = x.view(g, n // g, c, h, w)                                   # [G, M, C, H, W]
        y = (y.var(dim=0, unbiased=False) + self.eps).sqrt()             # [M, C, H, W]
        y = y.mean(dim=(1, 2, 3)).view(n // g, 1, 1, 1).repeat(g, 1, h, w)  # [N, 1, H, W]
        return torch.cat([x, y], dim=1)


def feature_maps(max_resolution: int, fmap_base: int, fmap_max: int) -> list[int]:
    """Feature maps at each resolution R = 4, 8, ..., ``max_resolution`` (a power of two >= 4):
    ``min(fmap_base / R, fmap_max)`` (at least 1)."""
    if max_resolution < 4 or max_resolution & (max_resolution - 1):
        raise UserError(f"max_resolution={max_resolution} must be a power of two >= 4 for progressive "
                        f"growing; use e.g. data.image_size=128.")
    return [max(1, min(int(fmap_base) // 2 ** k, int(fmap_max))) for k in range(2, int(math.log2(max_resolution)) + 1)]


class ProgressiveGenerator(nn.Module):
    """z [N, latent_dim] (pixel-normalised on entry) -> image [N, channels, R, R] at the current resolution R
    (linear output); ``max_resolution`` is the target image size."""

    def __init__(self, latent_dim: Count, max_resolution: MaxResolution = 128, channels: Count = 3,
                 fmap_base: Count = 8192, fmap_max: Count = 512) -> None:
        super().__init__()
        self.latent_dim, self.max_resolution, self.channels = latent_dim, max_resolution, channels
        ch = feature_maps(max_resolution, fmap_base, fmap_max)
        self.ch0 = ch[0]
        self.input = nn.Sequential(PixelNorm(), EqualizedLinear(latent_dim, ch[0] * 16, gain=math.sqrt(2) / 4))
        self.start = nn.Sequential(nn.LeakyReLU(LRELU), PixelNorm(),          # [ch0, 4, 4]
                                   EqualizedConv2d(ch[0], ch[0], 3), nn.LeakyReLU(LRELU), PixelNorm())
        self.blocks = nn.ModuleList([nn.Identity()] + [nn.Sequential(  # index i builds resolution 4 * 2^i
            nn.Upsample(scale_factor=2, mode="nearest"),
            EqualizedConv2d(ch[i - 1], ch[i], 3), nn.LeakyReLU(LRELU), PixelNorm(),
            EqualizedConv2d(ch[i], ch[i], 3), nn.LeakyReLU(LRELU), PixelNorm()) for i in range(1, len(ch))])
        self.to_rgb = nn.ModuleList([EqualizedConv2d(c, channels, 1, gain=1.0) for c in ch])

    def forward(self, z: Tensor, resolution: int | None = None, alpha: float | Tensor = 1.0) -> Tensor:
        depth = check_resolution(resolution or self.max_resolution, self.max_resolution)
        h = self.start(self.input(z.view(z.shape[0], -1)).view(z.shape[0], self.ch0, 4, 4))
        for i in range(1, depth):
            h = self.blocks[i](h)
        if depth == 0:
            return self.to_rgb[0](h)
        new = self.to_rgb[depth](self.blocks[depth](h))
        if not fading(alpha):
            return new
        old = F.interpolate(self.to_rgb[depth - 1](h), scale_factor=2, mode="nearest")
        return fade(old, new, alpha)


class ProgressiveDiscriminator(nn.Module):
    """image [N, channels, R, R] at the current resolution R -> logits [N] (a linear critic);
    ``group_size``: the minibatch standard deviation group."""

    def __init__(self, max_resolution: MaxResolution = 128, channels: Count = 3, fmap_base: Count = 8192,
                 fmap_max: Count = 512, group_size: Count = 4) -> None:
        super().__init__()
        self.max_resolution, self.channels = max_resolution, channels
        ch = feature_maps(max_resolution, fmap_base, fmap_max)
        self.from_rgb = nn.ModuleList([nn.Sequential(EqualizedConv2d(channels, c, 1), nn.LeakyReLU(LRELU))
                                       for c in ch])
        self.blocks = nn.ModuleList([nn.Identity()] + [nn.Sequential(  # index i maps resolution 4 * 2^i to half of it
            EqualizedConv2d(ch[i], ch[i], 3), nn.LeakyReLU(LRELU),
            EqualizedConv2d(ch[i], ch[i - 1], 3), nn.LeakyReLU(LRELU),
            nn.AvgPool2d(2)) for i in range(1, len(ch))])
        self.final = nn.Sequential(                  # [ch0, 4, 4] -> 1
            MinibatchStddev(group_size),
            EqualizedConv2d(ch[0] + 1, ch[0], 3), nn.LeakyReLU(LRELU),
            nn.Flatten(), EqualizedLinear(ch[0] * 16, ch[0]), nn.LeakyReLU(LRELU),
            EqualizedLinear(ch[0], 1, gain=1.0))

    def forward(self, x: Tensor, resolution: int | None = None, alpha: float | Tensor = 1.0) -> Tensor:
        depth = check_resolution(resolution or x.shape[-1], self.max_resolution)
        if x.shape[-1] != 4 * 2 ** depth:
            raise ValueError(f"discriminator got {x.shape[-1]}x{x.shape[-1]} images at resolution "
                             f"{4 * 2 ** depth}")
        h = self.from_rgb[depth](x)
        if depth > 0:
            h = self.blocks[depth](h)
            if fading(alpha):
                old = self.from_rgb[depth - 1](F.avg_pool2d(x, 2))
                h = fade(old, h, alpha)
        for i in range(depth - 1, 0, -1):
            h = self.blocks[i](h)
        return self.final(h).view(x.shape[0])
