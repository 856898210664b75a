"""FID, KID and Inception Score through torchmetrics, from precomputed features (nothing downloads).

KID and IS are seeded in a forked RNG, leaving training's RNG untouched."""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn
from torch import Tensor
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from gan_lab.metrics.sampling import seeded

#: rows per metric update: bounds the float64 copies torchmetrics makes of a chunk
CHUNK = 4096


class _Given(nn.Module):
    """Pass-through ``feature`` module for torchmetrics."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, features: Tensor) -> Tensor:
        return features


def _quiet(metric_class, **kwargs):
    """``metric_class(**kwargs)`` without torchmetrics' warning that all features stay in memory."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        return metric_class(**kwargs)


def _fed(metric, real: Tensor, fake: Tensor):
    """``metric`` on ``real``'s device, updated with both sets of features a chunk at a time."""
    metric = metric.to(real.device)
    for x in real.split(CHUNK):
        metric.update(x, real=True)
    for x in fake.to(real.device).split(CHUNK):
        metric.update(x, real=False)
    return metric


@torch.no_grad()
def frechet_distance(real: Tensor, fake: Tensor) -> float:
    """FID between two sets of features ``[N, F]`` (e.g. :func:`~gan_lab.metrics.features.extract_all`)."""
    metric = _fed(FrechetInceptionDistance(feature=_Given(real.shape[1]), reset_real_features=True), real, fake)
    return float(metric.compute().clamp_min(0.0))


@torch.no_grad()
def kernel_distance(real: Tensor, fake: Tensor, subset_size: int = 1000, subsets: int = 100,
                    seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over ``subsets`` random subsets); ``subset_size`` is capped by both set sizes."""
    size = min(subset_size, real.shape[0], fake.shape[0])
    metric = _fed(_quiet(KernelInceptionDistance, feature=_Given(real.shape[1]), subsets=subsets, subset_size=size),
                  real, fake)
    with seeded(seed, real.device):
        mean, std = metric.compute()
    return float(mean), float(std)


@torch.no_grad()
def inception_score(logits: Tensor, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """Inception Score (mean, std over ``splits``; std 0 with one split) from class logits ``[N, C]``."""
    splits = max(1, min(splits, logits.shape[0] // 2))
    metric = _quiet(InceptionScore, feature=_Given(logits.shape[1]), splits=splits).to(logits.device)
    for x in logits.split(CHUNK):
        metric.update(x)
    with seeded(seed, logits.device), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*degrees of freedom.*")  # std of one split
        mean, std = metric.compute()
    return float(mean), float(std) if splits > 1 else 0.0
