"""The three pixel spaces and the only conversions between them: uint8 [0, 255] (caches, loaders, PNGs, metric
image sets), float [-1, 1] (what nets and losses see) and float [0, 1] (pixel distances).
float -> uint8 clamps and rounds to nearest (ties to even), so uint8 -> float -> uint8 is the identity."""
from __future__ import annotations

import torch
from torch import Tensor


def to_float(images: Tensor) -> Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]; float images are taken to be in [-1, 1] and only cast to float32."""
    if images.dtype == torch.uint8:
        return images.float().div_(127.5).sub_(1.0)
    return images.float()


def to_uint8(images: Tensor) -> Tensor:
    """float [-1, 1] -> uint8 [0, 255], clamped and rounded to the nearest level; uint8 is returned as is."""
    if images.dtype == torch.uint8:
        return images
    return images.detach().float().add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)


def to_unit(images: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 [0, 255] or float [-1, 1] -> float [0, 1] in ``dtype`` (float64 for distances over many pixels)."""
    if images.dtype == torch.uint8:
        return images.to(dtype).div_(255.0)
    return images.to(dtype).add(1.0).div_(2.0)
