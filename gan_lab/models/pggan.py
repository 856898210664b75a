"""Progressive GAN (Karras et al. 2018): WGAN-GP with drift, grown from 4x4 with fade-ins.

The growth callback (``callbacks.growth``) sets the phase through :meth:`PGGAN.set_phase`; the module refuses to
train without it. The phase is saved in checkpoints."""
from __future__ import annotations

import logging
from typing import Any, Hashable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from gan_lab.constraints import NonNegative
from gan_lab.errors import UserError
from gan_lab.models.wgan_gp import WGANGP
from gan_lab.nets.progressive import check_resolution, fade, fading

log = logging.getLogger("gan_lab")


class PGGAN(WGANGP):
    """Progressive growing with equalized-LR nets and WGAN-GP + drift, at the phase set by a schedule.

    Args:
        generator: a :class:`~gan_lab.nets.progressive.ProgressiveGenerator`.
        discriminator: a :class:`~gan_lab.nets.progressive.ProgressiveDiscriminator` of the same ``max_resolution``.
        gp_weight, drift_weight: as :class:`~gan_lab.models.wgan_gp.WGANGP` (10 and 0.001).
        **kwargs: as :class:`~gan_lab.models.base.GAN`.
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, *args: Any,
                 gp_weight: NonNegative = 10.0, drift_weight: NonNegative = 0.001, **kwargs: Any) -> None:
        g_size = getattr(generator, "max_resolution", None)
        d_size = getattr(discriminator, "max_resolution", None)
        if g_size is None or g_size != d_size:
            raise UserError(f"model.generator grows to {g_size} but model.discriminator to {d_size}; set both "
                            f"max_resolution from data.image_size.")
        super().__init__(generator, discriminator, *args, gp_weight=gp_weight, drift_weight=drift_weight,
                         **kwargs)
        # alpha on the device too (filled with every new alpha, not saved), read by a captured step
        self.register_buffer("alpha_tensor", torch.ones(()), persistent=False)
        self.resolution, self.alpha = 4, 1.0
        self._phase_set_in_fit = False

    @property
    def alpha(self) -> float:
        """The fade-in weight of the current resolution's newest layers (1: fully grown in)."""
        return self._alpha

    @alpha.setter
    def alpha(self, value: float) -> None:
        self._alpha = float(value)
        self.alpha_tensor.fill_(self._alpha)  # a kernel with the number as argument: no host wait

    # --- the phase ----------------------------------------------------------------------

    @property
    def max_resolution(self) -> int:
        """The resolution the nets grow to (``data.image_size``)."""
        return int(self.generator.max_resolution)

    @property
    def phase(self) -> tuple[int, float]:
        """``(resolution, alpha)``: the side of the images G makes and D sees, and the fade-in weight."""
        return self.resolution, self.alpha

    def capture_key(self) -> tuple[Hashable, int, bool]:
        """One captured graph per resolution, fading in or fully grown (a fading one reads :attr:`alpha_tensor`)."""
        return super().capture_key(), self.resolution, self.alpha < 1.0

    def fade_weight(self) -> float | Tensor:
        """alpha as the nets take it: the device tensor while training through a fade-in, else the number."""
        return self.alpha_tensor if self.training and self.alpha < 1.0 else self.alpha

    def set_phase(self, resolution: int, alpha: float) -> None:
        """Train, sample and score at ``resolution`` and fade-in ``alpha`` in [0, 1] (set by the growth callback)."""
        check_resolution(int(resolution), self.max_resolution)
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha={alpha} must lie in [0, 1]")
        self.resolution, self.alpha = int(resolution), float(alpha)
        self._phase_set_in_fit = True

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self._phase_set_in_fit = False  # module setup runs after the callbacks' setup, before on_fit_start

    def on_train_start(self) -> None:
        # after every on_fit_start: the growth callback has set the phase by now if there is one
        if not self._phase_set_in_fit:
            raise UserError("model=pggan trains only with the growth callback (callbacks.growth), which sets its "
                            "resolution and fade-in from the images seen; conf/model/pggan.yaml brings it, so drop "
                            "the override that removed it (callbacks.growth=null).")

    # --- nets at the current phase ------------------------------------------------------

    def generate(self, z: Tensor, labels: Tensor) -> Tensor:
        return self.generator(z, self.resolution, self.fade_weight())

    def discriminate(self, images: Tensor, labels: Tensor) -> Tensor:
        return self.discriminator(images, self.resolution, self.fade_weight())

    def real_draws(self, real: Tensor, labels: Tensor) -> list[tuple[Tensor, Tensor]]:
        """The batch's real images faded as G's output is: ``alpha * x + (1 - alpha) * up(down(x))`` during a
        fade-in (Karras et al. 2018, Figure 2)."""
        alpha = self.fade_weight()
        if fading(alpha):
            low = F.interpolate(F.avg_pool2d(real, 2), scale_factor=2, mode="nearest")
            real = fade(low, real, alpha)
        return super().real_draws(real, labels)

    def log_terms(self, terms):
        if not self.is_logging_step():
            return  # no tensors filled for nothing: the base logs on logging steps only
        phase = {"resolution": torch.full((), float(self.resolution), device=self.device),
                 "alpha": torch.full((), self.alpha, device=self.device)}
        super().log_terms({**terms, **phase})

    # --- checkpoint state ---------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["gan_lab"]["phase"] = {"resolution": self.resolution, "alpha": self.alpha}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get("gan_lab", {}).get("phase")
        if saved:
            # not through set_phase: restoring a checkpoint does not drive the phase during training
            check_resolution(int(saved["resolution"]), self.max_resolution)
            self.resolution, self.alpha = int(saved["resolution"]), float(saved["alpha"])
