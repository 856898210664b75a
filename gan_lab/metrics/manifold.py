"""Fidelity and diversity from balls reaching each feature vector's ``k``-th nearest neighbour in its set.

Precision/recall (Kynkäänniemi et al. 2019) count points inside the other set's balls, surfaces included;
density/coverage (Naeem et al. 2020) use the real balls only, surfaces excluded."""
from __future__ import annotations

import torch
from torch import Tensor

from gan_lab.metrics.neighbours import nearest_neighbours


def ball_radii(features: Tensor, k: int) -> Tensor:
    """Distance of each row of ``features`` to its ``k``-th nearest *other* row [N]."""
    if not 1 <= k < features.shape[0]:
        raise ValueError(f"k={k} needs 1 <= k < {features.shape[0]} (the number of feature vectors)")
    dist, _ = nearest_neighbours(features, features, k, self_rows=torch.arange(features.shape[0]))
    return dist[:, k - 1]


@torch.no_grad()
def _ball_counts(points: Tensor, centres: Tensor, radii: Tensor, strict: bool, batch_size: int = 1024
                 ) -> tuple[Tensor, Tensor]:
    """For each point: how many balls (``centres`` [N, D], ``radii`` [N]) hold it [M]; and for each ball,
    whether it holds any point [N]."""
    points, centres = points.float().flatten(1), centres.float().flatten(1)
    counts, hit = [], torch.zeros(centres.shape[0], dtype=torch.bool, device=centres.device)
    for i in range(0, points.shape[0], batch_size):
        d = torch.cdist(points[i:i + batch_size], centres)
        inside = d < radii[None] if strict else d <= radii[None]
        counts.append(inside.sum(1))
        hit |= inside.any(0)
    return torch.cat(counts), hit


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> dict:
    """Improved precision and recall of ``fake`` [M, D] against ``real`` [N, D] feature vectors."""
    real_counts, _ = _ball_counts(fake, real, ball_radii(real, k), strict=False)
    fake_counts, _ = _ball_counts(real, fake, ball_radii(fake, k), strict=False)
    return {"precision": float((real_counts > 0).double().mean()),
            "recall": float((fake_counts > 0).double().mean()), "k": k}


def density_coverage(real: Tensor, fake: Tensor, k: int = 5) -> dict:
    """Density and coverage of ``fake`` [M, D] against ``real`` [N, D] feature vectors."""
    counts, covered = _ball_counts(fake, real, ball_radii(real, k), strict=True)
    return {"density": float(counts.double().sum() / (k * fake.shape[0])),
            "coverage": float(covered.double().mean()), "k": k}
