"""Adversarial objectives as small pure functions of discriminator logits.

``d_*`` map (real logits, fake logits) to D's loss and ``g_*`` map fake logits to G's; a ``conf/loss/`` config pairs
one of each into a :class:`GANLoss`. Penalties (gradient penalty, drift) are separate functions."""
from __future__ import annotations

import functools
import inspect
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from gan_lab.constraints import AnyFloat, Probability

# --- discriminator objectives -------------------------------------------------------------


def d_bce(real: Tensor, fake: Tensor, real_target: Probability = 1.0, fake_target: Probability = 0.0) -> Tensor:
    """Binary cross-entropy of the original GAN; targets below 1 / above 0 give label smoothing."""
    return F.binary_cross_entropy_with_logits(real, torch.full_like(real, real_target)) + \
        F.binary_cross_entropy_with_logits(fake, torch.full_like(fake, fake_target))


def d_wasserstein(real: Tensor, fake: Tensor) -> Tensor:
    """Critic loss of WGAN: minimise E[D(fake)] - E[D(real)] (the negated Wasserstein estimate)."""
    return fake.mean() - real.mean()


def d_hinge(real: Tensor, fake: Tensor) -> Tensor:
    """Hinge loss (SAGAN, BigGAN): relu(1 - D(x)) + relu(1 + D(G(z)))."""
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def d_least_squares(real: Tensor, fake: Tensor, real_target: AnyFloat = 1.0, fake_target: AnyFloat = 0.0) -> Tensor:
    """LSGAN: squared distance of the raw outputs to the real and fake targets."""
    return 0.5 * ((real - real_target) ** 2).mean() + 0.5 * ((fake - fake_target) ** 2).mean()


def categorical_targets(classes: Tensor, num_outputs: int, target: float = 1.0) -> Tensor:
    """One-hot ``[N, num_outputs]`` BCE targets whose positive entry is ``target`` (below 1: one-sided smoothing)."""
    return F.one_hot(classes, num_outputs).float() * target


def d_categorical(real: Tensor, fake: Tensor | None, real_classes: Tensor, fake_classes: Tensor | None,
                  real_target: Probability = 1.0) -> Tensor:
    """ArtGAN's K+1-way D objective (Tan et al. 2017): per-output BCE against one-hot targets, k for a real
    image of class k and the last ("fake") output for a generated one; ``real_target`` < 1 smooths the real side.
    ``fake=None`` (pre-training) gives the real term alone."""
    num_outputs = real.shape[1]
    loss = F.binary_cross_entropy_with_logits(real.float(), categorical_targets(real_classes, num_outputs, real_target))
    if fake is None:
        return loss
    return loss + F.binary_cross_entropy_with_logits(fake.float(), categorical_targets(fake_classes, num_outputs))


# --- generator objectives -----------------------------------------------------------------


def g_minimax(fake: Tensor) -> Tensor:
    """Saturating generator loss of the minimax game: minimise log(1 - D(G(z)))."""
    return -F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))


def g_non_saturating(fake: Tensor, target: Probability = 1.0) -> Tensor:
    """Non-saturating generator loss: maximise log D(G(z)), i.e. BCE against the real label."""
    return F.binary_cross_entropy_with_logits(fake, torch.full_like(fake, target))


def g_categorical(fake: Tensor, classes: Tensor, target: Probability = 1.0) -> Tensor:
    """ArtGAN's G objective: BCE of the K+1 outputs against the one-hot of the image's class k."""
    return F.binary_cross_entropy_with_logits(fake.float(), categorical_targets(classes, fake.shape[1], target))


def g_wasserstein(fake: Tensor) -> Tensor:
    """Generator loss of WGAN and of the hinge objective: maximise D(G(z))."""
    return -fake.mean()


def g_least_squares(fake: Tensor, target: AnyFloat = 1.0) -> Tensor:
    """LSGAN generator loss: squared distance of D(G(z)) to the real target."""
    return 0.5 * ((fake - target) ** 2).mean()


# --- penalties ----------------------------------------------------------------------------


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor) -> Tensor:
    """WGAN-GP penalty E[(||grad D(x_hat)||_2 - 1)^2] on random interpolates of real and fake."""
    eps = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()


def drift_penalty(real: Tensor) -> Tensor:
    """Progressive GAN's drift term E[D(x)^2], keeping the critic's output near zero."""
    return (real ** 2).mean()


# --- pairing ------------------------------------------------------------------------------


def plain_partial(fn: Callable) -> Callable:
    """``fn`` as a plain ``functools.partial`` when it is a subclass of one (e.g. Hydra's, slower per call)."""
    if isinstance(fn, functools.partial) and type(fn) is not functools.partial:
        return functools.partial(fn.func, *fn.args, **fn.keywords)
    return fn


class GANLoss:
    """An adversarial objective: one discriminator function and one generator function.

    ``probability``: logits are read through a sigmoid (BCE objectives), not as raw critic values (see :meth:`score`).
    ``needs_lipschitz``: the objective needs a Lipschitz D (Wasserstein); a model without one is warned.
    """

    def __init__(self, discriminator: Callable[[Tensor, Tensor], Tensor], generator: Callable[[Tensor], Tensor],
                 probability: bool = True, name: str = "non_saturating", needs_lipschitz: bool = False) -> None:
        self.discriminator, self.generator = plain_partial(discriminator), plain_partial(generator)
        self.probability, self.name, self.needs_lipschitz = bool(probability), name, bool(needs_lipschitz)

    def __repr__(self) -> str:
        return f"GANLoss({self.name})"

    @property
    def takes_classes(self) -> bool:
        """Whether D's objective scores K+1 outputs against classes (ArtGAN's categorical one)."""
        return "real_classes" in inspect.signature(self.discriminator).parameters

    def score(self, logits: Tensor) -> Tensor:
        """Mean D output as a researcher reads it: a probability for BCE, the raw value otherwise."""
        logits = logits.detach().float()
        return torch.sigmoid(logits).mean() if self.probability else logits.mean()
