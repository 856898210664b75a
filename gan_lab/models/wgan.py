"""WGAN (Arjovsky et al. 2017): a Wasserstein critic kept K-Lipschitz by clipping its weights.

The critic minimises ``loss.discriminator(real, fake)`` (``loss=wasserstein``: E[D(G(z))] - E[D(x)]),
and after every critic update each of its parameters is clamped to ``[-weight_clip, weight_clip]``
(0.01 in the paper), which bounds the critic's Lipschitz constant. The logged
``train/wasserstein`` = E[D(x)] - E[D(G(z))] is the critic's estimate of the Wasserstein distance
(up to that constant). The gradient penalty of :class:`~gan_lab.models.wgan_gp.WGANGP` is the other
way to keep the critic Lipschitz; it derives from this class, with clipping off by default.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gan_lab.errors import UserError
from gan_lab.models.base import GAN


class WGAN(GAN):
    """A :class:`GAN` whose critic logs the Wasserstein estimate and whose weights may be clipped.

    Args:
        weight_clip: after every critic update, clamp each critic parameter to ``[-c, c]`` (0.01 in
            the paper); ``None``: no clipping.
        *args, **kwargs: as :class:`GAN` (``n_critic`` 5 in the preset).
    """

    def __init__(self, *args: Any, weight_clip: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if weight_clip is not None and not weight_clip > 0:
            raise UserError(f"model.weight_clip={weight_clip} must be > 0 (the paper's 0.01), or null for no "
                            f"clipping.")
        self.weight_clip = None if weight_clip is None else float(weight_clip)

    def d_terms(self, real: Tensor, labels: Tensor, fake: Tensor, real_logits: Tensor, fake_logits: Tensor
                ) -> dict[str, Tensor]:
        """The critic's loss and mean outputs, and the Wasserstein estimate E[D(x)] - E[D(G(z))]."""
        terms = super().d_terms(real, labels, fake, real_logits, fake_logits)
        terms["wasserstein"] = (real_logits.mean() - fake_logits.mean()).detach()
        return terms

    def discriminator_update(self, opt, real, labels, fake, fake_labels, backward) -> dict[str, Tensor]:
        terms = super().discriminator_update(opt, real, labels, fake, fake_labels, backward)
        if self.weight_clip is not None:
            self.clip_critic_weights()
        return terms

    def lipschitz_constraint(self) -> str | None:
        return f"weight clipping at {self.weight_clip:g}" if self.weight_clip is not None else super().lipschitz_constraint()

    @torch.no_grad()
    def clip_critic_weights(self) -> None:
        """Clamp every critic parameter to ``[-weight_clip, weight_clip]``, in place (two kernels per
        device and dtype, no host synchronisation: a captured step holds them too)."""
        params = [p for p in self.discriminator_parameters() if p.requires_grad]
        torch._foreach_clamp_min_(params, -self.weight_clip)
        torch._foreach_clamp_max_(params, self.weight_clip)
