"""Parzen-window log-likelihood (Breuleux et al. 2011) under Gaussian kernels on generated samples, in float64
over [0, 1] pixels (values depend on the image size):
``log p(x) = logsumexp_i(-|x - mu_i|^2 / (2 sigma^2)) - log N - (D / 2) log(2 pi sigma^2)``."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from gan_lab.pixels import to_unit

#: the default bandwidth grid: logspace(-1, 0, 10), as in the reference implementation
DEFAULT_SIGMAS = tuple(float(s) for s in torch.logspace(-1, 0, 10, dtype=torch.float64))


def flatten_unit(images: Tensor) -> Tensor:
    """Images as rows [N, D]: uint8 kept (see :func:`unit_rows64`), float [-1, 1] scaled to [0, 1]."""
    x = images if images.dtype == torch.uint8 else to_unit(images)
    return x.reshape(x.shape[0], -1)


def unit_rows64(rows: Tensor) -> Tensor:
    """Rows of :func:`flatten_unit` as float64 in [0, 1]."""
    return to_unit(rows, torch.float64) if rows.dtype == torch.uint8 else rows.to(torch.float64)


@torch.no_grad()
def parzen_log_likelihood(x: Tensor, centers: Tensor, sigma: float, batch_size: int = 256,
                          chunk_size: int = 1024) -> Tensor:
    """Log-density of each row of ``x`` [M, D] under Gaussian kernels on ``centers`` [N, D]: [M]
    (float64). uint8 rows are read as pixels / 255; float rows as they are."""
    n, d = centers.shape
    # float64 and centred data: |x|^2 + |c|^2 - 2 x.c cancels badly in float32
    mean = sum(unit_rows64(centers[j:j + chunk_size]).sum(0) for j in range(0, n, chunk_size)) / n
    out = []
    for i in range(0, x.shape[0], batch_size):
        xb = unit_rows64(x[i:i + batch_size].to(centers.device)) - mean
        xb_sq = xb.square().sum(1, keepdim=True)
        running = torch.full((xb.shape[0],), -math.inf, dtype=torch.float64, device=centers.device)
        for j in range(0, n, chunk_size):
            cb = unit_rows64(centers[j:j + chunk_size]) - mean
            d2 = (xb_sq + cb.square().sum(1) - 2.0 * xb @ cb.T).clamp_min_(0.0)
            running = torch.logaddexp(running, torch.logsumexp(-d2 / (2.0 * sigma ** 2), dim=1))
        out.append(running)
    log_norm = math.log(n) + 0.5 * d * math.log(2.0 * math.pi * sigma ** 2)
    return torch.cat(out).sub(log_norm)


def select_sigma(centers: Tensor, x: Tensor, sigmas: Sequence[float] = DEFAULT_SIGMAS,
                 batch_size: int = 256) -> tuple[float, dict[float, float]]:
    """The grid bandwidth maximising the mean log-likelihood of ``x``; also the whole curve."""
    curve = {float(s): float(parzen_log_likelihood(x, centers, float(s), batch_size).mean()) for s in sigmas}
    return max(curve, key=curve.get), curve


def parzen_evaluate(generated: Tensor, select_on: Tensor, report_on: Tensor,
                    sigmas: Sequence[float] = DEFAULT_SIGMAS, batch_size: int = 256) -> dict:
    """The full protocol on images (uint8 or float [-1, 1]): sigma chosen on ``select_on``, the
    log-likelihood of ``report_on`` as mean and standard error."""
    device = generated.device
    centers = flatten_unit(generated)
    sigma, curve = select_sigma(centers, flatten_unit(select_on.to(device)), sigmas, batch_size)
    ll = parzen_log_likelihood(flatten_unit(report_on.to(device)), centers, sigma, batch_size)
    stderr = float(ll.std() / math.sqrt(ll.numel())) if ll.numel() > 1 else 0.0
    return {"value": float(ll.mean()), "stderr": stderr, "sigma": sigma,
            "sigma_curve": {f"{s:.4g}": round(v, 4) for s, v in curve.items()}}
