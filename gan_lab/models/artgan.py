"""ArtGAN (Tan, Chan, Aguirre & Tanaka, ICIP 2017): a conditional categorical GAN.

D = Enc + clsNet has K+1 outputs (K classes + "fake"); G = zNet + Dec. Dec(Enc(x))'s L2 error on real images,
times ``reconstruction_weight``, joins G's loss (trains Dec), D's (trains Enc) or both (``reconstruction_updates``)."""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from gan_lab.constraints import AnyFloat, NonNegative, NonNegativeInt
from gan_lab.errors import UserError
from gan_lab.models.base import GAN, frozen
from gan_lab.models.conditional import ConditionalGAN
from gan_lab.models.tricks import flip_mask

RECONSTRUCTION_UPDATES = ("generator", "discriminator", "both")
EXTRA_G_WHEN = ("d_loss", "d_adv_loss", "d_acc")


def reconstruction_loss(reconstruction: Tensor, images: Tensor) -> Tensor:
    """Mean squared per-pixel error ||Dec(Enc(x)) - x||^2."""
    return F.mse_loss(reconstruction.float(), images.float())


def adversarial_loss(real_fake_logit: Tensor, fake_fake_logit: Tensor) -> Tensor:
    """D's real-vs-generated BCE on its "fake" output (0 for real, 1 for generated), averaged over both batches."""
    real, fake = real_fake_logit.float(), fake_fake_logit.float()
    return 0.5 * (F.binary_cross_entropy_with_logits(real, torch.zeros_like(real))
                  + F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake)))


class ArtGAN(ConditionalGAN):
    """ArtGAN training algorithm; nets: :class:`gan_lab.nets.ArtGANGenerator` (``znet``,
    ``decoder``) and :class:`gan_lab.nets.ArtGANDiscriminator` (``encoder``, ``classifier``); the arguments
    beyond its own (``conf/model/artgan.yaml``) are :class:`ConditionalGAN`'s."""

    model_name = "artgan"
    k_plus_one = True

    def __init__(self, generator: nn.Module, discriminator: nn.Module, *args: Any,
                 reconstruction_weight: NonNegative = 1.0, reconstruction_updates: str = "generator",
                 pretrain_epochs: NonNegativeInt = 0, extra_g_when: str | None = None,
                 extra_g_threshold: AnyFloat | None = None, **kwargs: Any) -> None:
        for part, owner in (("decoder", generator), ("encoder", discriminator), ("classifier", discriminator)):
            if not isinstance(getattr(owner, part, None), nn.Module):
                raise UserError(f"model=artgan needs nets with a `{part}` (gan_lab.nets.ArtGANGenerator and "
                                f"gan_lab.nets.ArtGANDiscriminator); got {type(owner).__name__}.")
        if reconstruction_updates not in RECONSTRUCTION_UPDATES:
            raise UserError(f"model.reconstruction_updates={reconstruction_updates!r} is unknown; use one of "
                            f"{', '.join(RECONSTRUCTION_UPDATES)}.")
        if extra_g_when is not None and extra_g_when not in EXTRA_G_WHEN:
            raise UserError(f"model.extra_g_when={extra_g_when!r} is unknown; use d_adv_loss or d_loss (extra G "
                            f"update when D's real-vs-generated or whole loss < extra_g_threshold), d_acc (when D's "
                            f"accuracy > extra_g_threshold) or null.")
        super().__init__(generator, discriminator, *args, **kwargs)
        self.reconstruction_weight = float(reconstruction_weight)
        self.reconstruction_updates = reconstruction_updates
        self.pretrain_epochs = int(pretrain_epochs)
        if (extra_g_when is None) != (extra_g_threshold is None):
            raise UserError(f"model.extra_g_when={extra_g_when} and model.extra_g_threshold={extra_g_threshold} go "
                            f"together: set both (e.g. model.extra_g_when=d_loss model.extra_g_threshold=0.3) or neither.")
        self.extra_g_when = extra_g_when
        self.extra_g_threshold = None if extra_g_threshold is None else float(extra_g_threshold)
        # per-variant state, saved in checkpoints
        self.pretrain_batches = 0      # D-only batches done (pre-training)
        self.extra_g_updates = 0       # adaptive generator updates done

    # --- conditioning hooks -------------------------------------------------------------

    discriminate = GAN.discriminate  # K+1 logits; D reads no label (it predicts it)

    def d_scores(self, images: Tensor, labels: Tensor) -> Tensor:
        """D(x): the probability of *not* being fake, 1 - sigmoid(fake logit), per image."""
        logits = self.discriminate(self.to_model_range(images), labels).float()
        return 1.0 - torch.sigmoid(logits[:, -1])

    @property
    def pretraining(self) -> bool:
        return self.current_epoch < self.pretrain_epochs

    def reconstruction_in(self, update: str) -> bool:
        """Whether the reconstruction term joins the ``generator``'s or the ``discriminator``'s loss."""
        return self.reconstruction_weight > 0 and self.reconstruction_updates in (update, "both")

    # --- targets ---------------------------------------------------------------------------

    def real_classes(self, labels: Tensor) -> Tensor:
        """Real image of class k -> k; flipped ones (``label_flip``) -> "fake" (index K)."""
        if self.label_flip > 0:
            labels = torch.where(flip_mask(labels.shape[0], self.label_flip, labels.device),
                                 torch.full_like(labels, self.num_classes), labels)
        return labels

    def fake_classes(self, n: int) -> Tensor:
        """Generated image -> "fake" (index K); flipped ones (``label_flip``) -> a random real class."""
        labels = torch.full((n,), self.num_classes, dtype=torch.long, device=self.device)
        if self.label_flip > 0:
            labels = torch.where(flip_mask(n, self.label_flip, self.device),
                                 torch.randint(0, self.num_classes, (n,), device=self.device), labels)
        return labels

    # --- phases -------------------------------------------------------------------------

    def real_pass(self, real: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """D on the real batch: its K+1 logits, the D-side reconstruction term (0 when off) and scores."""
        features = self.discriminator.encoder(self.noisy_real(real))
        logits = self.discriminator.classifier(features)
        self.record_real_outputs(-logits[:, -1])  # "real" when the fake output is negative
        terms = {"d_real": 1.0 - torch.sigmoid(logits.detach()[:, -1].float()).mean(),
                 "d_acc_real": (logits.detach().argmax(1) == labels).float().mean()}
        extra = logits.new_zeros((), dtype=torch.float32)
        if self.reconstruction_in("discriminator"):
            with frozen(self.generator):  # the D-side term trains Enc only
                recon = reconstruction_loss(self.generator.decoder(features), real)
            extra = self.reconstruction_weight * recon
            terms["recon_loss"] = recon.detach()
        return logits, extra, terms

    def d_step(self, real: Tensor, labels: Tensor, fake: Tensor | None, fake_labels: Tensor | None) -> dict[str, Tensor]:
        real_logits, extra, terms = self.real_pass(real, labels)
        if fake is None:  # pre-training: D learns the real classes alone
            terms["d_loss"] = self.loss.discriminator(real_logits, None, self.real_classes(labels), None) + extra
            return terms
        fake_logits = self.discriminate(self.noisy_fake(fake), fake_labels)
        d_loss = self.loss.discriminator(real_logits, fake_logits, self.real_classes(labels),
                                         self.fake_classes(fake.shape[0]))
        fake_prob = torch.sigmoid(fake_logits.detach()[:, -1].float())
        terms.update(d_loss=d_loss + extra, d_fake=1.0 - fake_prob.mean(),
                     d_acc_fake=(fake_logits.detach().argmax(1) == self.num_classes).float().mean())
        if self.extra_g_when == "d_adv_loss":
            terms["d_adv_loss"] = adversarial_loss(real_logits.detach()[:, -1], fake_logits.detach()[:, -1])
        return terms

    def g_step(self, fake: Tensor, fake_labels: Tensor, real: Tensor, labels: Tensor) -> dict[str, Tensor]:
        logits = self.discriminate(self.noisy_fake(fake), fake_labels)
        adv = self.loss.generator(logits, fake_labels)
        terms = {"g_loss": adv, "g_adv": adv.detach()}
        if self.reconstruction_in("generator"):
            with torch.no_grad():  # Enc as D's update left it
                features = self.discriminator.encoder(real)
            recon = reconstruction_loss(self.generator.decoder(features), real)
            terms["g_loss"] = adv + self.reconstruction_weight * recon
            terms["recon_loss"] = recon.detach()
        return terms

    # --- the schedule of updates: pre-training and adaptive generator updates ----------------

    def d_updates(self) -> int:
        """One D update per draw of real images while pre-training, ``n_critic`` afterwards."""
        return self.draws_per_batch if self.pretraining else self.n_critic

    def d_sees_fakes(self) -> bool:
        """``False`` while pre-training: D learns the real classes alone."""
        return not self.pretraining

    def steady_batch(self) -> bool:
        """``False`` for pre-training batches, which run eagerly."""
        return not self.pretraining

    def host_terms(self) -> dict[str, float]:
        """``extra_g_updates`` (the adaptive G updates so far) when ``extra_g_when`` is set."""
        terms = super().host_terms()
        if self.extra_g_when is not None:
            terms["extra_g_updates"] = self.extra_g_updates
        return terms

    def may_add_g_updates(self) -> bool:
        return self.extra_g_when is not None

    def decide_g_updates(self, d_terms: Mapping[str, Tensor]) -> int:
        """0 while pre-training, else ``n_gen``, plus one when D is too strong (``extra_g_when``)."""
        if self.pretraining:
            self.pretrain_batches += 1
            return 0
        if self.discriminator_too_strong(d_terms):
            self.extra_g_updates += 1
            return self.n_gen + 1
        return self.n_gen

    def discriminator_too_strong(self, terms: Mapping[str, Tensor]) -> bool:
        """Whether D dominates by ``extra_g_when``, judged on the last D update's terms averaged
        over the DDP ranks."""
        if self.extra_g_when is None:
            return False
        if self.extra_g_when in ("d_loss", "d_adv_loss"):
            value = terms[self.extra_g_when].detach().float().clone()
        else:
            value = 0.5 * (terms["d_acc_real"] + terms["d_acc_fake"])
        value = float(self.over_ranks(value.reshape(1)))
        return value > self.extra_g_threshold if self.extra_g_when == "d_acc" else value < self.extra_g_threshold

    def on_train_epoch_end(self) -> None:
        """Step the lr schedule after adversarial epochs only, not pre-training ones."""
        if not self.pretraining:
            super().on_train_epoch_end()

    # --- checkpoint state ---------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["artgan"] = {"pretrain_batches": self.pretrain_batches, "extra_g_updates": self.extra_g_updates}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("artgan", {})
        self.pretrain_batches = int(state.get("pretrain_batches", 0))
        self.extra_g_updates = int(state.get("extra_g_updates", 0))
