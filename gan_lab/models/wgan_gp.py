"""WGAN-GP (Gulrajani et al. 2017): a Wasserstein critic kept 1-Lipschitz by a gradient penalty.

The critic minimises ``loss.discriminator(real, fake) + gp_weight * GP (+ drift_weight * E[D(x)^2])``, GP taken on
random interpolates of the real batch and the detached fakes."""
from __future__ import annotations

from typing import Any

from torch import Tensor

from gan_lab.constraints import NonNegative
from gan_lab.losses import drift_penalty, gradient_penalty
from gan_lab.models.wgan import WGAN


class WGANGP(WGAN):
    """A :class:`~gan_lab.models.wgan.WGAN` whose critic step adds the gradient penalty (no weight clipping
    unless ``weight_clip`` is given).

    Args:
        gp_weight: lambda of the gradient penalty (10 in the paper).
        drift_weight: weight of E[D(x)^2] (0.001 in Progressive GAN, 0 in WGAN-GP).
        *args, **kwargs: as :class:`~gan_lab.models.wgan.WGAN` (``n_critic`` 5 in the preset).
    """

    def __init__(self, *args: Any, gp_weight: NonNegative = 10.0, drift_weight: NonNegative = 0.0,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gp_weight, self.drift_weight = float(gp_weight), float(drift_weight)

    def precision_refusal(self, precision: str, optimizers=()) -> str | None:
        """Refuses ``16-mixed`` with the gradient penalty (float16 underflow), then asks ``super()``."""
        if self.gp_weight and precision == "16-mixed":
            return ("trainer.precision=16-mixed cannot take the gradient penalty (model.gp_weight="
                    f"{self.gp_weight:g}) without loss scaling inside the loss; use trainer.precision=bf16-mixed "
                    "(or 32-true).")
        return super().precision_refusal(precision, optimizers)

    def lipschitz_constraint(self) -> str | None:
        return "the gradient penalty" if self.gp_weight else super().lipschitz_constraint()

    def d_terms(self, real: Tensor, labels: Tensor, fake: Tensor, real_logits: Tensor, fake_logits: Tensor
                ) -> dict[str, Tensor]:
        terms = super().d_terms(real, labels, fake, real_logits, fake_logits)
        if self.gp_weight:
            penalty = gradient_penalty(lambda x: self.discriminate(x, labels), real, fake)
            terms["d_loss"] = terms["d_loss"] + self.gp_weight * penalty
            terms["gradient_penalty"] = penalty.detach()
        if self.drift_weight:
            drift = drift_penalty(real_logits)
            terms["d_loss"] = terms["d_loss"] + self.drift_weight * drift
            terms["drift_penalty"] = drift.detach()
        return terms
