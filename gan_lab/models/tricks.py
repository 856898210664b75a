"""Discriminator-side tricks of the ArtGAN studies: instance noise and label flipping.

One-sided label smoothing is the loss config's ``loss.discriminator.real_target``."""
from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor

from gan_lab.errors import UserError

#: the probability that a real and a fake sample swap targets (1 would swap every one)
FlipProbability = Annotated[float, Field(ge=0, lt=1)]


class InstanceNoise:
    """N(0, std_t^2) added to every discriminator input; ``std_t`` falls linearly from ``std`` to 0
    over ``decay_batches`` batches (0: constant ``std``). ``std=0`` turns it off."""

    def __init__(self, std: float = 0.0, decay_batches: int = 0) -> None:
        if decay_batches and not std:
            raise UserError(f"model.instance_noise_decay={decay_batches} has no effect while model.instance_noise=0; "
                            f"set model.instance_noise (e.g. 0.1) or leave the decay at 0.")
        self.std, self.decay_batches = float(std), int(decay_batches)

    def std_at(self, batches_seen: int) -> float:
        return self.std * max(0.0, 1.0 - batches_seen / self.decay_batches) if self.decay_batches else self.std

    def __call__(self, images: Tensor, batches_seen: int, on_device: Tensor | None = None) -> Tensor:
        """``images`` plus noise of std ``std_at(batches_seen)``; ``on_device``: that std as a 0-dim
        float32 tensor (a captured step's), giving the same noise bit for bit."""
        std = self.std_at(batches_seen)
        if std <= 0:
            return images
        noise = torch.randn_like(images)
        if on_device is None:
            return images + std * noise
        return images + (on_device * noise.float()).to(images.dtype)

    def __repr__(self) -> str:
        return f"InstanceNoise(std={self.std}, decay_batches={self.decay_batches})"


def flip_mask(n: int, p: float, device: torch.device | str = "cpu") -> Tensor:
    """Boolean ``[n]``: which samples get the opposite label (each with probability ``p``)."""
    return torch.rand(n, device=device) < p


def swap_flipped(real_logits: Tensor, fake_logits: Tensor, p: float) -> tuple[Tensor, Tensor]:
    """Label flipping for a binary D loss: with probability ``p`` the i-th real and the i-th fake logit
    trade sides; both sides keep their size."""
    if p <= 0:
        return real_logits, fake_logits
    n = min(real_logits.shape[0], fake_logits.shape[0])
    flip = flip_mask(n, p, real_logits.device)
    real_side, fake_side = real_logits.clone(), fake_logits.clone()
    real_side[:n] = torch.where(flip, fake_logits[:n], real_logits[:n])
    fake_side[:n] = torch.where(flip, real_logits[:n], fake_logits[:n])
    return real_side, fake_side
