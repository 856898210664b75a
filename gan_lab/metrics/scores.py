"""Histograms of the discriminator's outputs on real held-out images and on generated images."""
from __future__ import annotations

from pathlib import Path

from torch import Tensor


def score_histogram(real: Tensor, fake: Tensor, path: str | Path, xlabel: str = "D logit") -> Path:
    """Overlaid histograms of D(x) and D(G(z)), written to ``path`` (PNG)."""
    from matplotlib.figure import Figure

    real, fake = real.detach().float().cpu().numpy(), fake.detach().float().cpu().numpy()
    lo, hi = float(min(real.min(), fake.min())), float(max(real.max(), fake.max()))
    bins = 50 if hi > lo else 1
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.hist(real, bins=bins, range=(lo, hi + 1e-6), alpha=0.6, label=f"D(x), real val ({len(real)})")
    ax.hist(fake, bins=bins, range=(lo, hi + 1e-6), alpha=0.6, label=f"D(G(z)), generated ({len(fake)})")
    ax.set(xlabel=xlabel, ylabel="images")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
