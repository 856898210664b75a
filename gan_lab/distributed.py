"""Reducing a few numbers over the processes of a multi-process (DDP) run.

What the processes decide from their own batches (ArtGAN's extra G update, ADA's probability, a stop
request) must be decided from values reduced over all of them, or they wait on each other forever.
"""
from __future__ import annotations

import torch
from torch import Tensor

OPS = ("mean", "sum", "max")


def reduce_over_processes(values: Tensor, world_size: int, op: str = "mean") -> Tensor:
    """``values`` reduced over the ``world_size`` processes in one collective, in place, and returned
    (``op``: ``mean``, ``sum`` or ``max``); as they are in a single process. Calls
    ``torch.distributed.all_reduce`` directly, so the result stays on the device until read."""
    if op not in OPS:
        raise ValueError(f"op={op!r} is not one of {OPS}")
    dist = torch.distributed
    if world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return values
    dist.all_reduce(values, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return values.div_(world_size) if op == "mean" else values
