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


def _metric(metric_class, features: Tensor, **kwargs):
    """``metric_class(**kwargs)`` on ``features``' device, with a pass-through ``feature`` module of their width,
    without torchmetrics' warning that all features stay in memory."""
    given = nn.Identity()
    given.num_features = features.shape[1]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        return metric_class(feature=given, **kwargs).to(features.device)


def _fed(metric, real: Tensor, fake: Tensor):
    """``metric`` updated with both sets of features a chunk at a time."""
    for x in real.split(CHUNK):
        metric.update(x, real=True)
    for x in fake.to(real.device).split(CHUNK):
        metric.update(x, real=False)
    return metric


@torch.no_grad()
def frechet_distance(real: Tensor, fake: Tensor) -> float:
    """FID between two sets of features ``[N, F]`` (e.g. :func:`~gan_lab.metrics.features.extract_all`)."""
    metric = _fed(_metric(FrechetInceptionDistance, real, reset_real_features=True), real, fake)
    return float(metric.compute().clamp_min(0.0))


@torch.no_grad()
def kernel_distance(real: Tensor, fake: Tensor, subset_size: int = 1000, subsets: int = 100,
                    seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over ``subsets`` random subsets); ``subset_size`` is capped by both set sizes."""
    size = min(subset_size, real.shape[0], fake.shape[0])
    metric = _fed(_metric(KernelInceptionDistance, real, subsets=subsets, subset_size=size), real, fake)
    with seeded(seed, real.device):
        mean, std = metric.compute()
    return float(mean), float(std)


@torch.no_grad()
def inception_score(logits: Tensor, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """Inception Score (mean, std over ``splits``; std 0 with one split) from class logits ``[N, C]``."""
    splits = max(1, min(splits, logits.shape[0] // 2))
    metric = _metric(InceptionScore, logits, splits=splits)
    for x in logits.split(CHUNK):
        metric.update(x)
    with seeded(seed, logits.device), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*degrees of freedom.*")  # std of one split
        mean, std = metric.compute()
    return float(mean), float(std) if splits > 1 else 0.0
