"""reduce_over_processes with two real CPU processes (gloo): mean, sum and max of values that differ
by process, in place, and the single-process case untouched."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gan_lab.distributed import reduce_over_processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        results = {}
        for op in ("mean", "sum", "max"):
            values = torch.tensor([1.0 + rank, -3.0 * rank, 10.0 if rank else 2.0])
            out = reduce_over_processes(values, 2, op)
            results[op] = (out.tolist(), out is values)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_values_are_reduced_over_two_processes_in_place(tmp_path):
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        results = torch.load(tmp_path / f"rank{rank}.pt")
        # rank 0: [1, 0, 2]; rank 1: [2, -3, 10]
        assert results["mean"] == ([1.5, -1.5, 6.0], True)
        assert results["sum"] == ([3.0, -3.0, 12.0], True)
        assert results["max"] == ([2.0, 0.0, 10.0], True)


def test_one_process_keeps_its_values():
    values = torch.tensor([1.0, -2.0])
    assert reduce_over_processes(values, 1, "mean") is values and values.tolist() == [1.0, -2.0]
    with pytest.raises(ValueError, match="op='min'"):
        reduce_over_processes(values, 1, "min")
