"""Class-conditional GAN (Mirza & Osindero 2014): G and D both receive the label (``model=cgan_mlp``, ``cdcgan``).

Its sample grid has one row per class and ``samples_per_class`` columns, each column sharing one fixed latent."""
from __future__ import annotations

from typing import Any, Hashable, Mapping, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from gan_lab.constraints import Count, NonNegative, NonNegativeInt, Positive
from gan_lab.errors import UserError
from gan_lab.losses import GANLoss
from gan_lab.models.base import GAN, OptimizerFactory, SchedulerFactory
from gan_lab.models.tricks import FlipProbability, InstanceNoise, swap_flipped
from gan_lab.nets.init import dcgan_init, kaiming_dense_dcgan_conv_init
from gan_lab.noise import Noise

#: which of D's inputs get instance noise (``model.instance_noise_on``)
INSTANCE_NOISE_ON = ("real", "real_and_fake")

#: weight initialisations a conditional model can apply to both nets (``model.init``)
INITS = {"dcgan": dcgan_init, "kaiming_dense_dcgan_conv": kaiming_dense_dcgan_conv_init}


def check_classes(num_classes: int, class_names: Sequence[str] | None, model: str) -> list[str]:
    """The class names of a labelled dataset; a conditional model on unlabelled data is an error."""
    if num_classes is None or int(num_classes) != num_classes or num_classes < 2:
        raise UserError(f"model={model} is conditioned on class labels but the dataset has num_classes="
                        f"{num_classes}; pick a labelled dataset (e.g. data=digits, data=wikiart_genre) or an "
                        f"unconditional model (e.g. model=dcgan).")
    names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise UserError(f"{len(names)} class_names were given for num_classes={num_classes}; they must match "
                        f"(leave model.class_names=${{data.class_names}}).")
    return names


class ConditionalGAN(GAN):
    """A GAN whose generator is ``G(z, label)`` and discriminator ``D(image, label) -> logits [N]``.

    Args (beyond :class:`GAN`'s):
        num_classes: number of classes, at least 2.
        class_names: one name per class, shown beside the grid rows.
        samples_per_class: images per grid row (one row per class).
        label_flip: probability that a real and a fake sample swap targets in D's loss (0: off).
        instance_noise: std of Gaussian noise added to D's inputs (0: off).
        instance_noise_decay: batches over which that std falls linearly to 0 (0: constant).
        instance_noise_on: D's inputs that get it, ``real`` or ``real_and_fake`` (``None``: the latter); needs
            ``instance_noise`` > 0.
        init: re-initialise both nets with ``dcgan`` or ``kaiming_dense_dcgan_conv`` (``None``: keep theirs).
    """

    model_name = "conditional GAN"
    conditional = True

    def __init__(self, generator: nn.Module, discriminator: nn.Module, noise: Noise, loss: GANLoss,
                 optimizer: Mapping[str, OptimizerFactory],
                 scheduler: Mapping[str, SchedulerFactory | None] | None = None,
                 num_classes: Count = 10, class_names: Sequence[str] | None = None, samples_per_class: Count = 8,
                 label_flip: FlipProbability = 0.0, instance_noise: NonNegative = 0.0,
                 instance_noise_decay: NonNegativeInt = 0, init: str | None = None, n_critic: Count = 1,
                 n_gen: Count = 1, instance_noise_on: str | None = None, d_augment: nn.Module | None = None,
                 gradient_clip_norm: Positive | None = None, fresh_reals: bool = False,
                 fresh_fakes: bool = False) -> None:
        names = check_classes(num_classes, class_names, self.model_name)
        if instance_noise_on is not None and not instance_noise:
            raise UserError(f"model.instance_noise_on={instance_noise_on} has no effect while model.instance_noise=0; "
                            f"set model.instance_noise (e.g. 0.1) or model.instance_noise_on=null.")
        instance_noise_on = instance_noise_on or "real_and_fake"
        if instance_noise_on not in INSTANCE_NOISE_ON:
            raise UserError(f"model.instance_noise_on={instance_noise_on!r} is unknown; use real (real images "
                            f"only) or real_and_fake (every image D sees).")
        if init is not None and init not in INITS:
            raise UserError(f"model.init={init!r} is unknown; use one of {', '.join(INITS)} or null.")
        # grid_labels() is called by GAN.__init__, so the class count must exist before it runs.
        self.num_classes, self.samples_per_class = int(num_classes), int(samples_per_class)
        super().__init__(generator, discriminator, noise, loss, optimizer, scheduler, n_critic, n_gen,
                         num_samples=self.num_classes * self.samples_per_class, d_augment=d_augment,
                         gradient_clip_norm=gradient_clip_norm, fresh_reals=fresh_reals, fresh_fakes=fresh_fakes)
        self.class_names = names
        self.label_flip = float(label_flip)
        self.instance_noise = InstanceNoise(instance_noise, instance_noise_decay)
        self.instance_noise_on = instance_noise_on
        # the decaying std on the device too (filled before every batch, not saved), for a captured step
        self.register_buffer("instance_noise_std", torch.full((), self.instance_noise.std_at(0)), persistent=False)
        if init is not None:
            self.generator.apply(INITS[init])
            self.discriminator.apply(INITS[init])
        # One latent per grid column, shared by all class rows.
        self.fixed_noise = self.fixed_noise[:self.samples_per_class].repeat(self.num_classes, 1)

    # --- conditioning hooks -------------------------------------------------------------

    def generate(self, z: Tensor, labels: Tensor) -> Tensor:
        return self.generator(z, labels)

    def discriminate(self, images: Tensor, labels: Tensor) -> Tensor:
        return self.discriminator(images, labels)

    def sample_labels(self, n: int) -> Tensor:
        return torch.randint(0, self.num_classes, (n,), device=self.device)

    def grid_labels(self, n: int) -> Tensor:
        """Class k fills grid row k (``n`` labels, cycling over the classes)."""
        per_row = max(1, n // self.num_classes)
        return torch.arange(n, dtype=torch.long) // per_row % self.num_classes

    @property
    def grid_nrow(self) -> int:
        return self.samples_per_class

    @property
    def grid_row_names(self) -> list[str]:
        return list(self.class_names)

    # --- instance noise: a decaying std is read on the device ----------------------------

    def noise_decaying(self) -> bool:
        """Whether this batch's instance noise is still on its way down to 0."""
        return self.instance_noise.decay_batches > 0 and self.instance_noise.std_at(self.batches_seen) > 0

    def capture_key(self) -> Hashable:
        """Adds whether the instance noise still decays (a captured step then reads :attr:`instance_noise_std`)."""
        return super().capture_key(), self.noise_decaying()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        if self.instance_noise.decay_batches:
            self.instance_noise_std.fill_(self.instance_noise.std_at(self.batches_seen))  # no host wait
        return super().on_train_batch_start(batch, batch_idx)

    def noise_std(self) -> Tensor | None:
        """The std tensor on the device while training through the decay, else ``None`` (use the number)."""
        return self.instance_noise_std if self.training and self.noise_decaying() else None

    # --- phases -------------------------------------------------------------------------

    def noisy_real(self, real: Tensor) -> Tensor:
        """The real images as D sees them (with instance noise when it is on)."""
        return self.instance_noise(real, self.batches_seen, self.noise_std())

    def noisy_fake(self, fake: Tensor) -> Tensor:
        """The generated images as D sees them: noisy only when ``instance_noise_on=real_and_fake``."""
        return self.noisy_real(fake) if self.instance_noise_on == "real_and_fake" else fake

    def d_step(self, real: Tensor, labels: Tensor, fake: Tensor, fake_labels: Tensor) -> dict[str, Tensor]:
        real_logits = self.discriminate(self.noisy_real(real), labels)
        fake_logits = self.discriminate(self.noisy_fake(fake), fake_labels)
        self.record_real_outputs(real_logits)
        real_side, fake_side = swap_flipped(real_logits, fake_logits, self.label_flip)
        return {"d_loss": self.loss.discriminator(real_side, fake_side),
                "d_real": self.loss.score(real_logits),
                "d_fake": self.loss.score(fake_logits)}

    def g_step(self, fake: Tensor, fake_labels: Tensor, real: Tensor, labels: Tensor) -> dict[str, Tensor]:
        return super().g_step(self.noisy_fake(fake), fake_labels, real, labels)
