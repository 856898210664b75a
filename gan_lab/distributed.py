"""Reducing a few numbers over the processes of a DDP run, for decisions every process must take alike
(ArtGAN's extra G update, ADA's probability, a stop request)."""
from __future__ import annotations

import torch
from torch import Tensor

OPS = ("mean", "sum", "max")


def reduce_over_processes(values: Tensor, world_size: int, op: str = "mean") -> Tensor:
    """``values`` reduced in place over the ``world_size`` processes (``op``: mean, sum or max) and returned;
    unchanged in a single process. One ``all_reduce``; the result stays on the device."""
    if op not in OPS:
        raise ValueError(f"op={op!r} is not one of {OPS}")
    dist = torch.distributed
    if world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return values
    dist.all_reduce(values, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return values.div_(world_size) if op == "mean" else values
