"""The three pixel spaces of gan_lab and the only conversions between them.

- **uint8 [0, 255]**: what caches, DataLoaders, PNG files and the metrics' image sets hold;
- **float [-1, 1]**: the data contract, what every net and loss sees;
- **float [0, 1]**: the space of pixel distances (nearest neighbours, Parzen windows).

float -> uint8 clamps and rounds to the nearest level (ties to even), so uint8 -> float -> uint8 is
the identity. The module imports nothing of gan_lab.
"""
from __future__ import annotations

import torch
from torch import Tensor


def to_float(images: Tensor) -> Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]; float images are taken to be in [-1, 1] already and are
    only cast to float32, so a function that accepts either kind calls this once."""
    if images.dtype == torch.uint8:
        return images.float().div_(127.5).sub_(1.0)
    return images.float()


def to_uint8(images: Tensor) -> Tensor:
    """float [-1, 1] -> uint8 [0, 255], clamped and rounded to the nearest level (what a PNG file
    keeps); uint8 images are returned as they are."""
    if images.dtype == torch.uint8:
        return images
    return images.detach().float().add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)


def to_unit(images: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 [0, 255] or float [-1, 1] -> float [0, 1] in ``dtype`` (float64 for distances over many
    pixels), the space of pixel distances."""
    if images.dtype == torch.uint8:
        return images.to(dtype).div_(255.0)
    return images.to(dtype).add(1.0).div_(2.0)
