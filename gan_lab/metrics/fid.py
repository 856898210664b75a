"""FID, KID and Inception Score through torchmetrics, with an explicit feature extractor.

The extractor (see :mod:`gan_lab.metrics.features`) is passed as torchmetrics' ``feature`` module,
so nothing downloads. Images are uint8 or float in [-1, 1]; they are fed in batches on the
extractor's device. KID and IS draw random subsets: they run under a fixed seed in a forked RNG, so
a score is reproducible and training's random stream is untouched.
"""
from __future__ import annotations

import warnings
from typing import Iterable

import torch
import torch.nn as nn
from torch import Tensor
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from gan_lab.metrics.features import FeatureExtractor


class _Logits(nn.Module):
    """The extractor's class logits as torchmetrics' IS ``feature`` module."""

    def __init__(self, extractor: FeatureExtractor) -> None:
        super().__init__()
        self.extractor = extractor

    def forward(self, images: Tensor) -> Tensor:
        return self.extractor.logits(images)


def _quiet(metric_class, **kwargs):
    """torchmetrics warns that KID and IS keep all features in memory: expected here, sets are capped."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        return metric_class(**kwargs)


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _batches(images: Tensor, batch_size: int, device) -> Iterable[Tensor]:
    for i in range(0, images.shape[0], batch_size):
        yield images[i:i + batch_size].to(device)


@torch.no_grad()
def frechet_distance(real: Tensor, fake: Tensor, extractor: FeatureExtractor, batch_size: int = 256) -> float:
    """FID between two image sets in the extractor's feature space."""
    device = _device(extractor)
    metric = FrechetInceptionDistance(feature=extractor, reset_real_features=True).to(device)
    for x in _batches(real, batch_size, device):
        metric.update(x, real=True)
    for x in _batches(fake, batch_size, device):
        metric.update(x, real=False)
    return float(metric.compute().clamp_min(0.0))


@torch.no_grad()
def kernel_distance(real: Tensor, fake: Tensor, extractor: FeatureExtractor, subset_size: int = 1000,
                    subsets: int = 100, batch_size: int = 256, seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over ``subsets`` random subsets); ``subset_size`` is capped by both set sizes."""
    device = _device(extractor)
    size = min(subset_size, real.shape[0], fake.shape[0])
    metric = _quiet(KernelInceptionDistance, feature=extractor, subsets=subsets, subset_size=size).to(device)
    for x in _batches(real, batch_size, device):
        metric.update(x, real=True)
    for x in _batches(fake, batch_size, device):
        metric.update(x, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


@torch.no_grad()
def inception_score(fake: Tensor, extractor: FeatureExtractor, splits: int = 10, batch_size: int = 256,
                    seed: int = 0) -> tuple[float, float]:
    """Inception Score (mean, std over ``splits``) from the extractor's class logits."""
    if extractor.logits(fake[:1].to(_device(extractor))) is None:
        raise ValueError(f"the feature extractor {extractor.name} has no classifier head, so no Inception Score.")
    device = _device(extractor)
    metric = _quiet(InceptionScore, feature=_Logits(extractor),
                    splits=max(1, min(splits, fake.shape[0] // 2))).to(device)
    for x in _batches(fake, batch_size, device):
        metric.update(x)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)
