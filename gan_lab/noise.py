"""Latent distributions: objects with ``sample(n, device) -> Tensor[n, latent_dim]``, chosen by the config group
``noise=normal|uniform|gamma|interpolated`` and set by plain-float overrides (``noise=normal noise.mean=-1``)."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from gan_lab.constraints import AnyFloat, Count, Positive, Probability
from gan_lab.errors import UserError


class Noise(ABC):
    """Base class; subclasses draw ``[n, latent_dim]`` samples on a device and give one coordinate's analytic
    ``mean`` and ``std``."""

    def __init__(self, latent_dim: Count) -> None:
        self.latent_dim = int(latent_dim)

    @abstractmethod
    def sample(self, n: int, device: torch.device | str = "cpu") -> Tensor:
        """Draw ``[n, latent_dim]`` latent vectors on ``device``."""

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


class Normal(Noise):
    """N(mean, std^2) per coordinate; N(0, 1) is the DCGAN default."""

    def __init__(self, latent_dim: Count = 100, mean: AnyFloat = 0.0, std: Positive = 1.0) -> None:
        super().__init__(latent_dim)
        self.mean, self.std = float(mean), float(std)

    def sample(self, n, device="cpu"):
        return torch.randn(n, self.latent_dim, device=device).mul_(self.std).add_(self.mean)


class Uniform(Noise):
    """U(low, high) per coordinate; U(-1, 1) is one setting of the Monet study."""

    def __init__(self, latent_dim: Count = 100, low: AnyFloat = -1.0, high: AnyFloat = 1.0) -> None:
        super().__init__(latent_dim)
        if not high > low:
            raise UserError(f"noise.low={low} must be below noise.high={high}; swap or change them.")
        self.low, self.high = float(low), float(high)

    def sample(self, n, device="cpu"):
        return torch.rand(n, self.latent_dim, device=device).mul_(self.high - self.low).add_(self.low)

    @property
    def mean(self):
        return 0.5 * (self.low + self.high)

    @property
    def std(self):
        return (self.high - self.low) / math.sqrt(12.0)


class Gamma(Noise):
    """Gamma(concentration, rate) per coordinate; Gamma(2, 1) is one setting of the Monet study."""

    def __init__(self, latent_dim: Count = 100, concentration: Positive = 2.0, rate: Positive = 1.0) -> None:
        super().__init__(latent_dim)
        self.concentration, self.rate = float(concentration), float(rate)

    def sample(self, n, device="cpu"):
        alpha = torch.full((n, self.latent_dim), self.concentration, device=device)
        return torch.distributions.Gamma(alpha, torch.tensor(self.rate, device=device)).sample()

    @property
    def mean(self):
        return self.concentration / self.rate

    @property
    def std(self):
        return math.sqrt(self.concentration) / self.rate


class Interpolated(Noise):
    """``alpha * z1 + (1 - alpha) * z2`` with ``z1``, ``z2`` two independent draws of ``base`` (the DCGAN
    study's blended latents): the base mean, with the std scaled by ``sqrt(alpha^2 + (1 - alpha)^2)``.

    Args:
        latent_dim: size of each latent; must equal ``base.latent_dim``.
        base: the distribution blended (``noise@noise.base=uniform`` swaps it).
        alpha: weight of the first draw, in [0, 1]; 0 and 1 give the base distribution itself.
    """

    def __init__(self, latent_dim: Count, base: Noise, alpha: Probability = 0.3) -> None:
        super().__init__(latent_dim)
        if not isinstance(base, Noise):
            raise UserError(f"noise.base={base!r} is not a latent distribution; pick one with "
                            f"noise@noise.base=normal (or uniform, gamma, ...).")
        if base.latent_dim != self.latent_dim:
            raise UserError(f"noise.base.latent_dim={base.latent_dim} differs from noise.latent_dim="
                            f"{self.latent_dim}; set only noise.latent_dim (the base follows it).")
        self.base, self.alpha = base, float(alpha)

    def sample(self, n, device="cpu"):
        z1, z2 = self.base.sample(n, device), self.base.sample(n, device)
        return z1.mul_(self.alpha).add_(z2, alpha=1.0 - self.alpha)

    @property
    def mean(self):
        return self.base.mean

    @property
    def std(self):
        return self.base.std * math.sqrt(self.alpha ** 2 + (1.0 - self.alpha) ** 2)
