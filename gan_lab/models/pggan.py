"""Progressive GAN (Karras et al. 2018): WGAN-GP with drift, grown from 4x4 with fade-ins.

The variant decides *when* to grow (its :class:`~gan_lab.models.growth.GrowthSchedule`, a function
of the images seen); the nets of :mod:`gan_lab.nets.progressive` know *how* (``resolution`` and
``alpha`` arguments). Per batch the module:

1. reads the phase (resolution, alpha, batch size) from the schedule;
2. trains D and G at that phase (the base loop; the critic step adds gradient penalty and drift);
3. updates the exponential moving average of G's weights (``generator_ema``, used for samples);
4. asks the DataModule for the next batch's resolution (``set_resolution``: area downsampling of
   the cached full-size images on the device).

Batch size per resolution: a DataLoader's batch size is fixed, so when a stage needs another one
the module ends the epoch early (``on_train_batch_start`` returns -1, the batch is not used) and
the Trainer rebuilds the DataLoader with ``datamodule.batch_size`` at the next epoch (the module
sets ``reload_dataloaders_every_n_epochs=1`` when the schedule has more than one batch size).
Epochs therefore end at those growth points as well as after a pass over the data.

Checkpoints hold ``images_seen`` (base) and the phase; the phase is recomputed from the images
seen on resume, so a resumed run continues the same resolution and alpha.
"""
from __future__ import annotations

import copy
import logging
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from gan_lab.errors import UserError
from gan_lab.models.growth import GrowthSchedule, Phase
from gan_lab.models.wgan_gp import WGANGP

log = logging.getLogger("gan_lab")


class PGGAN(WGANGP):
    """Progressive growing with equalized-LR nets, WGAN-GP + drift and an EMA generator.

    Args:
        generator: a :class:`~gan_lab.nets.progressive.ProgressiveGenerator`.
        discriminator: a :class:`~gan_lab.nets.progressive.ProgressiveDiscriminator`.
        schedule: the growth schedule (its target must be the nets' ``max_resolution``).
        ema_half_life: images over which the EMA generator forgets half of its past (10,000 in the
            paper); 0 makes it a copy of the live generator.
        reset_optimizers_on_growth: clear the optimisers' moment estimates when a new resolution
            starts to fade in, as the paper's code does (the new layers start from fresh statistics).
        gp_weight, drift_weight: as :class:`~gan_lab.models.wgan_gp.WGANGP` (10 and 0.001).
        **kwargs: as :class:`~gan_lab.models.base.GAN`.
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, *args: Any, schedule: GrowthSchedule,
                 ema_half_life: float = 10_000.0, reset_optimizers_on_growth: bool = True,
                 gp_weight: float = 10.0, drift_weight: float = 0.001, **kwargs: Any) -> None:
        for name, net in (("generator", generator), ("discriminator", discriminator)):
            size = getattr(net, "max_resolution", None)
            if size != schedule.target_resolution:
                raise UserError(f"model.{name} grows to {size} but the schedule's target resolution is "
                                f"{schedule.target_resolution}; set both from data.image_size.")
        if ema_half_life < 0:
            raise UserError(f"model.ema_half_life={ema_half_life} must be >= 0 images; e.g. 10000.")
        super().__init__(generator, discriminator, *args, gp_weight=gp_weight, drift_weight=drift_weight,
                         **kwargs)
        self.schedule = schedule
        self.phase = schedule.phase(0)
        self.ema_half_life = float(ema_half_life)
        self.reset_optimizers_on_growth = bool(reset_optimizers_on_growth)
        self.generator_ema = copy.deepcopy(generator).requires_grad_(False)
        self._loader_batch_size: int | None = None  # batch size of the DataLoader in use
        self._data_batch_size: int | None = None    # data.batch_size, for stages with batch_size null

    # --- the phase ----------------------------------------------------------------------

    @property
    def resolution(self) -> int:
        return self.phase.resolution

    @property
    def alpha(self) -> float:
        return self.phase.alpha

    def update_phase(self) -> Phase:
        """Phase for the current ``images_seen``; points the DataModule at its resolution."""
        self.phase = self.schedule.phase(self.images_seen)
        datamodule = self._datamodule()
        if datamodule is not None and hasattr(datamodule, "set_resolution"):
            datamodule.set_resolution(self.phase.resolution)
        return self.phase

    def _datamodule(self):
        trainer = self._trainer  # None outside a Trainer (unit tests)
        return getattr(trainer, "datamodule", None) if trainer is not None else None

    def _wanted_batch_size(self) -> int | None:
        return self.phase.batch_size if self.phase.batch_size is not None else self._data_batch_size

    def _apply_batch_size(self) -> None:
        datamodule, wanted = self._datamodule(), self._wanted_batch_size()
        if datamodule is not None and wanted is not None:
            datamodule.batch_size = wanted

    def on_fit_start(self) -> None:
        # Runs after a checkpoint restored images_seen and before the DataLoader is built.
        self._data_batch_size = getattr(self._datamodule(), "batch_size", None)
        self.update_phase()
        self._apply_batch_size()
        if len(self.schedule.batch_sizes) > 1 and not self.trainer.reload_dataloaders_every_n_epochs:
            self.trainer.reload_dataloaders_every_n_epochs = 1
        log.info("progressive growing: %s; starting at %dx%d, alpha %.3f", self.schedule,
                 self.resolution, self.resolution, self.alpha)

    def on_train_epoch_start(self) -> None:
        datamodule = self._datamodule()
        self._loader_batch_size = getattr(datamodule, "batch_size", None)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        wanted = self._wanted_batch_size()
        if wanted is not None and self._loader_batch_size is not None and wanted != self._loader_batch_size:
            self._apply_batch_size()
            return -1  # end the epoch: the next one rebuilds the DataLoader with the new batch size
        return None

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.update_ema(batch[0].shape[0] * self.trainer.world_size)
        stage = self.phase.stage
        if self.update_phase().stage != stage and self.reset_optimizers_on_growth:
            for opt in self.trainer.optimizers:
                opt.state.clear()

    # --- nets at the current phase ------------------------------------------------------

    def generate(self, z: Tensor, labels: Tensor) -> Tensor:
        return self.generator(z, self.phase.resolution, self.phase.alpha)

    def discriminate(self, images: Tensor, labels: Tensor) -> Tensor:
        return self.discriminator(images, self.phase.resolution, self.phase.alpha)

    def log_terms(self, terms):
        phase = {"resolution": torch.full((), float(self.phase.resolution), device=self.device),
                 "alpha": torch.full((), self.phase.alpha, device=self.device)}
        super().log_terms({**terms, **phase})

    # --- exponential moving average of G ------------------------------------------------

    @torch.no_grad()
    def update_ema(self, batch_images: int) -> None:
        """ema <- beta * ema + (1 - beta) * live, beta = 0.5 ** (batch images / half-life)."""
        beta = 0.5 ** (batch_images / self.ema_half_life) if self.ema_half_life > 0 else 0.0
        ema = list(self.generator_ema.parameters())
        live = [p.detach() for p in self.generator.parameters()]
        torch._foreach_lerp_(ema, live, 1.0 - beta)
        for b_ema, b_live in zip(self.generator_ema.buffers(), self.generator.buffers()):
            b_ema.copy_(b_live)

    @torch.no_grad()
    def sample(self, z: Tensor | None = None, labels: Tensor | None = None, n: int | None = None) -> Tensor:
        """Images in [-1, 1] at the current resolution and alpha, from the EMA generator."""
        if z is None:
            z = self.noise.sample(n or self.num_samples, self.device)
        was_training = self.generator_ema.training
        self.generator_ema.eval()
        try:
            out = self.generator_ema(z.to(self.device), self.phase.resolution, self.phase.alpha)
            return out.float().clamp(-1, 1)
        finally:
            self.generator_ema.train(was_training)

    # --- checkpoint state ---------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["gan_lab"]["phase"] = {"resolution": self.phase.resolution, "alpha": self.phase.alpha,
                                          "batch_size": self.phase.batch_size, "stage": self.phase.stage,
                                          "images_seen": self.images_seen}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.phase = self.schedule.phase(self.images_seen)
        saved = checkpoint.get("gan_lab", {}).get("phase")
        if saved and (saved["resolution"], saved["alpha"]) != (self.phase.resolution, self.phase.alpha):
            log.warning("the growth schedule changed since the checkpoint: it was at %dx%d alpha %.3f, "
                        "the current schedule puts %d images at %dx%d alpha %.3f", saved["resolution"],
                        saved["resolution"], saved["alpha"], self.images_seen, self.phase.resolution,
                        self.phase.resolution, self.phase.alpha)
