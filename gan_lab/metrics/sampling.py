"""Drawing images from a trained GAN through its hooks (``noise.sample``, ``sample(z, labels)``, ``sample_labels``).

Seeded in a forked RNG (training's RNG untouched); ``sample`` draws from ``generator_ema`` when it is set."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn
from torch import Tensor

from gan_lab.pixels import to_uint8


@contextmanager
def ema_weights(model, enabled: bool = True) -> Iterator[str]:
    """Sample from ``generator_ema`` when the model has one and ``enabled``, else from the live
    generator (by unsetting ``generator_ema`` for the duration); yields ``"ema"`` or ``"live"``."""
    ema = getattr(model, "generator_ema", None)
    if not isinstance(ema, nn.Module):
        yield "live"
    elif enabled:
        yield "ema"
    else:
        model.generator_ema = None
        try:
            yield "live"
        finally:
            model.generator_ema = ema


@contextmanager
def seeded(seed: int, device: torch.device | str) -> Iterator[None]:
    device = torch.device(device)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def generate_images(model, n: int, seed: int = 0, batch_size: int = 256,
                    labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``n`` generated images as uint8 on the CPU (quantised like a saved PNG) and their labels
    (``labels`` when given, else the model's ``sample_labels``)."""
    images, all_labels = [], []
    with seeded(seed, model.device):
        for i in range(0, n, batch_size):
            b = min(batch_size, n - i)
            z = model.noise.sample(b, model.device)
            lab = labels[i:i + b].to(model.device) if labels is not None else model.sample_labels(b)
            images.append(to_uint8(model.sample(z, lab)).cpu())
            all_labels.append(lab.cpu())
    return torch.cat(images), torch.cat(all_labels)


def seeded_latents(model, n: int, seed: int) -> Tensor:
    """``n`` latents of the model's noise drawn under ``seed`` (training's RNG untouched)."""
    with seeded(seed, model.device):
        return model.noise.sample(n, model.device)


def latents_from_seeds(model, seeds: list[int]) -> Tensor:
    """One latent per seed (the same latent a one-image run with that seed would draw)."""
    return torch.cat([seeded_latents(model, 1, int(s)) for s in seeds])


def lerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Linear interpolation; ``t`` [T] -> [T, *a.shape]."""
    t = t.to(a).view(-1, *([1] * a.dim()))
    return a + (b - a) * t


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation (great circle through ``a`` and ``b``, norms linear); linear when (anti)parallel."""
    t = t.to(a).view(-1, *([1] * a.dim()))
    na, nb = a.norm(), b.norm()
    cos = ((a / na) * (b / nb)).sum().clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    if omega.abs() < 1e-4 or (torch.pi - omega).abs() < 1e-4:
        return lerp(a, b, t.flatten())
    so = torch.sin(omega)
    direction = (torch.sin((1 - t) * omega) / so) * (a / na) + (torch.sin(t * omega) / so) * (b / nb)
    return direction * (na + (nb - na) * t)


def interpolate_latents(latents: Tensor, steps: int, mode: str = "linear") -> Tensor:
    """A path through ``latents`` [K, D]: ``steps`` frames per segment, endpoints included once;
    [(K - 1) * (steps - 1) + 1, D]."""
    fn = {"linear": lerp, "spherical": slerp}[mode]
    t = torch.linspace(0, 1, max(2, steps), device=latents.device)
    return torch.cat([latents[:1], *(fn(a, b, t)[1:] for a, b in zip(latents[:-1], latents[1:]))])
