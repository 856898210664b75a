"""The plain PyTorch loop a benchmark times gan_lab against: the module's own batch
(``GAN.updates``) with raw optimizers, ``Tensor.backward`` and a per-phase autocast."""
from __future__ import annotations

import time
from contextlib import ExitStack, nullcontext
from typing import ContextManager, Iterator

import torch
from torch import Tensor
from torch.utils.data import IterableDataset

from gan_lab.callbacks.fast_path import GraphedStep, make_capturable
from gan_lab.pixels import to_float
from gan_lab.precision import MIXED, PhaseMixedPrecision


class DeviceBatches(IterableDataset):
    """``count`` random batches indexed from uint8 images already on the device (no copies)."""

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int, count: int) -> None:
        self.images, self.labels, self.batch_size, self.count = images, labels, batch_size, count

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for _ in range(self.count):
            idx = torch.randint(0, self.images.shape[0], (self.batch_size,), device=self.images.device)
            yield self.images[idx], self.labels[idx]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class ScaledOptimizer:
    """A raw optimizer stepped through a ``GradScaler`` (``16-mixed``) as Lightning steps it: unscale, the module's
    :meth:`~gan_lab.models.base.GAN.on_before_optimizer_step` (clipping), step."""

    def __init__(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, model) -> None:
        self.optimizer, self.scaler, self.model = optimizer, scaler, model
        self.param_groups = optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.scaler.unscale_(self.optimizer)
        self.model.on_before_optimizer_step(self.optimizer)
        self.scaler.step(self.optimizer)
        self.scaler.update()


class PlainLoop:
    """The module's batch without Lightning: :meth:`gan_lab.models.base.GAN.updates` with raw optimizers,
    ``Tensor.backward`` and ``precision``'s per-phase autocast (``16-mixed``: a ``GradScaler``). ``graphed``: the
    batch captured as one CUDA graph (:class:`~gan_lab.callbacks.fast_path.GraphedStep`) after ``GRAPH_WARMUP``."""

    GRAPH_WARMUP = 3

    def __init__(self, model, precision: str, device: torch.device, graphed: bool = False) -> None:
        self.model, self.device = model, device
        (self.opt_d, self.opt_g), _ = model.configure_optimizers()
        model.loop_precision = plugin = PhaseMixedPrecision(precision, device.type) if precision in MIXED else None
        if plugin is not None:
            plugin.cache_enabled = not graphed  # as callbacks.fast_path.cuda_graph sets it
        self.scaler = None if plugin is None else plugin.scaler  # 16-mixed's
        self.graphed: GraphedStep | None = None
        if graphed:
            make_capturable([self.opt_d, self.opt_g])
            self.graphed = GraphedStep(self.step, [self.opt_d, self.opt_g], self.GRAPH_WARMUP)
        elif self.scaler is not None:
            self.opt_d, self.opt_g = (ScaledOptimizer(o, self.scaler, model) for o in (self.opt_d, self.opt_g))

    def backward(self, loss: Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def step(self, images: Tensor, labels: Tensor) -> None:
        m = self.model
        m.updates(m.to_model_range(to_float(images)), labels, self.opt_d, self.opt_g, self.backward)
        m.adapt_augmentation(images.shape[0])

    def run(self, batches: Iterator[tuple[Tensor, Tensor]], warmup: int,
            around: ContextManager = nullcontext()) -> tuple[int, float]:
        """Images timed and seconds, after ``warmup`` untimed batches (the timed ones inside ``around``,
        e.g. a profiler)."""
        timed, start = 0, 0.0
        with ExitStack() as timed_part:
            for i, (images, labels) in enumerate(batches):
                if i == warmup:
                    sync(self.device)
                    timed_part.enter_context(around)
                    start = time.perf_counter()
                (self.graphed or self.step)(images, labels)
                timed += images.shape[0] if i >= warmup else 0
            sync(self.device)
            seconds = time.perf_counter() - start
        return timed, seconds
