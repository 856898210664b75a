"""WGAN (Arjovsky et al. 2017): a Wasserstein critic kept K-Lipschitz by clipping its weights.

Logs ``train/wasserstein`` = E[D(x)] - E[D(G(z))]. The optional ``critic_warmup`` (the paper code's) makes the first
25 generator updates, and every 500th, wait for 100 critic updates."""
from __future__ import annotations

import logging
import math
from typing import Any, Mapping

import torch
from torch import Tensor

from gan_lab.compat import clamp_
from gan_lab.constraints import NonNegativeInt, Positive
from gan_lab.errors import UserError
from gan_lab.models.base import GAN

log = logging.getLogger("gan_lab")

#: the keys of ``model.critic_warmup`` and what they say
WARMUP_KEYS = {"updates": "the critic updates before a warm-up generator update, 100 in the paper's code",
               "first": "how many of the first generator updates are warm-up ones, 25 in the paper's code",
               "every": "every how many generator updates another one is, 500 in the paper's code"}


def check_critic_warmup(value: Mapping[str, Any] | None) -> dict[str, int] | None:
    """``model.critic_warmup`` as ``{"updates", "first", "every"}`` integers, or ``None`` (off)."""
    if value is None:
        return None
    example = "e.g. model.critic_warmup={updates:100,first:25,every:500}, or model.critic_warmup=null for none"
    if not isinstance(value, Mapping) or set(value) != set(WARMUP_KEYS):
        raise UserError(f"model.critic_warmup={value} must have exactly the keys {', '.join(WARMUP_KEYS)}; {example}.")
    for key, least in (("updates", 1), ("first", 0), ("every", 1)):
        v = value[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < least:
            raise UserError(f"model.critic_warmup.{key}={v!r} must be an integer >= {least} ({WARMUP_KEYS[key]}); "
                            f"{example}.")
    return {key: int(value[key]) for key in WARMUP_KEYS}


class WGAN(GAN):
    """A :class:`GAN` whose critic logs the Wasserstein estimate and whose weights may be clipped.

    Args:
        weight_clip: clamp each critic parameter to ``[-c, c]`` after every critic update (0.01 in the paper);
            ``None``: no clipping.
        critic_warmup: ``{updates, first, every}`` of the warm-up (100, 25, 500 in the paper's code); ``None``: off.
        *args, **kwargs: as :class:`GAN` (``n_critic`` 5 in the preset).
    """

    def __init__(self, *args: Any, weight_clip: Positive | None = None,
                 critic_warmup: Mapping[str, NonNegativeInt] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.weight_clip = None if weight_clip is None else float(weight_clip)
        self.critic_warmup = check_critic_warmup(critic_warmup)
        # the warm-up's state, saved in checkpoints
        self.generator_updates_done = 0   # the generator updates made so far (the paper code's gen_iterations)
        self.critic_updates_waited = 0    # critic updates since the last generator update

    # --- the critic warm-up: batches without a generator update -----------------------------

    def warming_up(self, generator_updates: int | None = None) -> bool:
        """Whether the generator update after ``generator_updates`` (default: those made so far) waits for
        ``critic_warmup.updates`` critic updates."""
        w = self.critic_warmup
        g = self.generator_updates_done if generator_updates is None else generator_updates
        return w is not None and (g < w["first"] or g % w["every"] == 0)

    def waits(self, generator_updates: int, critic_updates_waited: int) -> bool:
        """Whether the next generator update still waits, after ``generator_updates`` and with
        ``critic_updates_waited`` critic updates since the last one."""
        return self.warming_up(generator_updates) and critic_updates_waited < self.critic_warmup["updates"]

    def decide_g_updates(self, d_terms: Mapping[str, Tensor]) -> int:
        """``n_gen``; none while a warm-up generator update still waits for critic updates."""
        self.critic_updates_waited += self.d_updates()
        if self.waits(self.generator_updates_done, self.critic_updates_waited):
            return 0
        self.critic_updates_waited = 0
        updates = super().decide_g_updates(d_terms)
        self.generator_updates_done += updates
        return updates

    def generator_updates_in(self, batches: int) -> int:
        """The generator updates the next ``batches`` batches make, from the warm-up's state now."""
        g, waited = self.generator_updates_done, self.critic_updates_waited
        for _ in range(batches):
            waited += self.n_critic
            if not self.waits(g, waited):
                waited, g = 0, g + self.n_gen
        return g - self.generator_updates_done

    def on_fit_start(self) -> None:
        """Warn when the run is shorter than the warm-up's first ``first * updates / n_critic`` batches
        (500 with the paper's numbers): it would make few generator updates."""
        super().on_fit_start()
        w = self.critic_warmup
        if w is None or self.generator_updates_done >= w["first"]:
            return
        wait = math.ceil(w["updates"] / self.n_critic)  # batches per warm-up generator update
        planned = self.trainer.estimated_stepping_batches - self.batches_seen
        if wait < 2 or not math.isfinite(planned) or planned >= (w["first"] - self.generator_updates_done) * wait:
            return
        made = self.generator_updates_in(int(planned))
        log.warning("model.critic_warmup: each of the first %d generator updates waits for %d critic updates (%d "
                    "batches of model.n_critic=%d), and this run trains %d batches, so it makes %d generator update%s; "
                    "train longer or set model.critic_warmup=null.", w["first"], w["updates"], wait, self.n_critic,
                    planned, made, "" if made == 1 else "s")

    def steady_batch(self) -> bool:
        """Warm-up batches run eagerly; a captured step holds the rest."""
        return not self.warming_up() and super().steady_batch()

    def host_terms(self) -> dict[str, float]:
        """``generator_updates`` (made so far) when the critic warms up."""
        terms = super().host_terms()
        if self.critic_warmup is not None:
            terms["generator_updates"] = self.generator_updates_done
        return terms

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["wgan"] = {"generator_updates_done": self.generator_updates_done,
                              "critic_updates_waited": self.critic_updates_waited}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("wgan", {})
        # a checkpoint without the warm-up's state: every batch made n_gen generator updates
        self.generator_updates_done = int(state.get("generator_updates_done", self.batches_seen * self.n_gen))
        self.critic_updates_waited = int(state.get("critic_updates_waited", 0))

    # --- the critic ---------------------------------------------------------------------------

    def d_terms(self, real: Tensor, labels: Tensor, fake: Tensor, real_logits: Tensor, fake_logits: Tensor
                ) -> dict[str, Tensor]:
        """The critic's loss and mean outputs, and the Wasserstein estimate E[D(x)] - E[D(G(z))]."""
        terms = super().d_terms(real, labels, fake, real_logits, fake_logits)
        terms["wasserstein"] = (real_logits.mean() - fake_logits.mean()).detach()
        return terms

    @torch.no_grad()
    def after_discriminator_step(self) -> None:
        """With ``weight_clip``, clamp every critic parameter to ``[-weight_clip, weight_clip]`` in place."""
        if self.weight_clip is not None:
            clamp_([p for p in self.discriminator.parameters() if p.requires_grad], -self.weight_clip, self.weight_clip)

    def lipschitz_constraint(self) -> str | None:
        return f"weight clipping at {self.weight_clip:g}" if self.weight_clip is not None else super().lipschitz_constraint()
