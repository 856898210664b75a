"""Nearest training neighbours of generated images: grids, and a memorisation rate with a held-out baseline."""
from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def nearest_neighbours(queries: Tensor, references: Tensor, k: int = 1, batch_size: int = 512,
                       self_rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Euclidean distances [M, k] and indices [M, k] of the ``k`` nearest rows of ``references``
    [N, D] for each row of ``queries`` [M, D]. ``self_rows`` [M] gives, per query, a reference row to skip."""
    queries, references = queries.float().flatten(1), references.float().flatten(1)
    k = min(k, references.shape[0] - int(self_rows is not None))
    dists, idxs = [], []
    for i in range(0, queries.shape[0], batch_size):
        d = torch.cdist(queries[i:i + batch_size], references)
        if self_rows is not None:
            rows = torch.arange(d.shape[0], device=d.device)
            d[rows, self_rows[i:i + batch_size].to(d.device)] = float("inf")
        dist, idx = d.topk(k, dim=1, largest=False)
        dists.append(dist)
        idxs.append(idx)
    return torch.cat(dists), torch.cat(idxs)


def memorisation(generated: Tensor, train: Tensor, held_out: Tensor | None = None, quantile: float = 0.5,
                 max_reference: int = 5000, seed: int = 0) -> dict:
    """Share of ``generated`` vectors closer to ``train`` than the ``quantile`` of train-to-train nearest distances.

    ``max_reference`` caps the seeded random train rows estimating the quantile; ``held_out``'s share is ``baseline``.
    """
    n = train.shape[0]
    rows = torch.arange(n) if n <= max_reference else \
        torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_reference]
    within, _ = nearest_neighbours(train[rows.to(train.device)], train, 1, self_rows=rows)
    threshold = float(torch.quantile(within[:, 0].double().cpu(), quantile))
    dist, _ = nearest_neighbours(generated, train, 1)
    out = {"value": float((dist[:, 0] < threshold).double().mean()), "threshold": threshold,
           "quantile": quantile, "median_nn_distance": float(dist[:, 0].double().median())}
    if held_out is not None:
        base, _ = nearest_neighbours(held_out, train, 1)
        out["baseline"] = float((base[:, 0] < threshold).double().mean())
    return out


def neighbour_rows(generated: Tensor, train_images: Tensor, indices: Tensor) -> Tensor:
    """Images for a grid with one row per generated image: the generated image, then its
    neighbours in order (``indices`` [M, k] into ``train_images``)."""
    return torch.cat([torch.cat([generated[i:i + 1].to(train_images.device), train_images[indices[i]]])
                      for i in range(indices.shape[0])])
