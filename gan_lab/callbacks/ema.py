"""Exponential moving average of the generator's weights (``callbacks.ema``), for any GAN model.

Averaging G's weights over the last few thousand images gives smoother, better samples than the
live weights of any single step (Karras et al. 2018; Yazıcı et al. 2019). The callback attaches a
frozen copy of ``pl_module.generator`` as ``pl_module.generator_ema`` (in its ``setup`` hook, before
Lightning restores a checkpoint, so a resumed run continues its EMA) and after every training batch
of ``n`` images (all processes together) updates it as

    ema <- beta * ema + (1 - beta) * live,  beta = 0.5 ** (n / half_life_images),

so the EMA forgets half of its past every ``half_life_images`` images, whatever the batch size
(``half_life_images: 0`` makes it a copy of the live weights). Buffers (BatchNorm running
statistics) are copied from the live G. The module's ``sample`` (sample grids, metrics, evaluation,
generation) draws from ``generator_ema`` when it has one; being a submodule, it is saved in
checkpoints and comes back with ``gan_lab.runs.load_run`` (``ema=false`` there samples the live G).

Off by default (``half_life_images: null``); on with e.g. ``callbacks.ema.half_life_images=10000``.
"""
from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn as nn

from gan_lab.compat import lerp_
from gan_lab.constraints import NonNegative
from gan_lab.errors import UserError


def ema_beta(batch_images: int, half_life_images: float) -> float:
    """The weight of the old average after ``batch_images`` images: 0.5 ** (images / half-life)."""
    return 0.5 ** (batch_images / half_life_images) if half_life_images > 0 else 0.0


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
    """Keeps ``pl_module.generator_ema``, the exponential moving average of ``pl_module.generator``.

    Args:
        half_life_images: training images over which the average forgets half of its past (10,000 in
            the Progressive GAN preset); 0 makes it a copy of the live generator; ``None`` turns the
            callback off (no ``generator_ema``: samples come from the live generator).
    """

    def __init__(self, half_life_images: NonNegative | None = None) -> None:
        self.half_life_images = None if half_life_images is None else float(half_life_images)

    @property
    def enabled(self) -> bool:
        return self.half_life_images is not None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not self.enabled or stage != "fit":
            return
        if not callable(getattr(pl_module, "attach_generator_ema", None)):
            raise UserError(f"callbacks.ema averages a GAN's generator, but {type(pl_module).__name__} is not a "
                            f"gan_lab GAN model (no attach_generator_ema); set callbacks.ema.half_life_images=null.")
        pl_module.attach_generator_ema()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self.enabled:
            return
        images = batch[0].shape[0] * trainer.world_size
        update_ema(pl_module.generator_ema, pl_module.generator, ema_beta(images, self.half_life_images))
