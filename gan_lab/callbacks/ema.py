"""Exponential moving average of the generator's weights (``callbacks.ema``, off by default), for any GAN model.
The module's ``sample`` draws from ``generator_ema`` when it has one."""
from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn as nn

from gan_lab.compat import lerp_
from gan_lab.constraints import NonNegative
from gan_lab.errors import UserError


@torch.no_grad()
def update_ema(ema: nn.Module, live: nn.Module, beta: float) -> None:
    """``ema``'s parameters <- beta * ema + (1 - beta) * live; its buffers <- live's."""
    ema_params = list(ema.parameters())
    live_params = [p.detach() for p in live.parameters()]
    if len(ema_params) != len(live_params):
        raise RuntimeError(f"the EMA generator has {len(ema_params)} parameters and the generator {len(live_params)}")
    if ema_params:
        lerp_(ema_params, live_params, 1.0 - beta)
    for b_ema, b_live in zip(ema.buffers(), live.buffers()):
        b_ema.copy_(b_live)


class EMA(L.Callback):
    """Keeps ``pl_module.generator_ema``, the exponential moving average of ``pl_module.generator``: attached in
    ``setup`` (before a checkpoint restores it), updated after every batch of ``n`` images (all processes) with
    ``beta = 0.5 ** (n / half_life_images)``.

    Args:
        half_life_images: images over which the average forgets half its past (0: a copy of the live
            generator; ``None``: off, no ``generator_ema``).
    """

    def __init__(self, half_life_images: NonNegative | None = None) -> None:
        self.half_life_images = None if half_life_images is None else float(half_life_images)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.half_life_images is None or stage != "fit":
            return
        if not callable(getattr(pl_module, "attach_generator_ema", None)):
            raise UserError(f"callbacks.ema averages a GAN's generator, but {type(pl_module).__name__} is not a "
                            f"gan_lab GAN model (no attach_generator_ema); set callbacks.ema.half_life_images=null.")
        pl_module.attach_generator_ema()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        half_life = self.half_life_images
        if half_life is None:
            return
        images = batch[0].shape[0] * trainer.world_size
        beta = 0.5 ** (images / half_life) if half_life > 0 else 0.0  # the old average's weight after these images
        update_ema(pl_module.generator_ema, pl_module.generator, beta)
