"""Throughput benchmarks: ``python -m gan_lab.bench [train|data|all] [options] [config overrides]``.

``train`` times the GAN module (built as ``gan_lab.run`` builds it) under a Lightning Trainer
against a plain PyTorch loop running the module's own batch (``GAN.updates``) with raw optimizers,
alternating repetitions in one process, on synthetic uint8 data held on the device (``--cuda-graph``:
both loops replay each batch as one CUDA graph). ``data`` measures how fast an
:class:`~gan_lab.data.base.ImageDataModule` serves batches from its in-memory uint8 images. Results
are printed as a markdown table and appended to ``experiments/bench/README.md``; ``train --profile N``
appends N profiled batches of each loop to ``experiments/bench/profiles.md``.
"""
from __future__ import annotations

import argparse
import atexit
import datetime as dt
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Iterator, Sequence

import lightning as L
import torch
from omegaconf import DictConfig, open_dict
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from gan_lab import CONFIG_DIR
from gan_lab.build import build_callbacks, build_loggers, build_model, build_trainer, serve_draws
from gan_lab.callbacks.fast_path import (FastPath, GraphedStep, compile_mode, compile_nets, make_capturable,
                                        use_channels_last)
from gan_lab.data.base import EpochSampler, ImageDataModule
from gan_lab.pixels import to_float
from gan_lab.data.disk import DeviceLoader
from gan_lab.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "experiments" / "bench" / "README.md"
PRECISIONS = {"32": "32-true", "32-true": "32-true", "bf16-mixed": "bf16-mixed", "16-mixed": "16-mixed"}
HEADER = ("# Benchmarks\n\nWritten by `python -m gan_lab.bench` (newest last). `train`: images/s of the "
          "gan_lab module under a Lightning Trainer and of a plain PyTorch loop doing the same D and G "
          "updates, measured alternately in one process (ratio = median of paired repetitions; goal "
          ">= 0.97). `data`: images/s served by an ImageDataModule from its in-memory uint8 images "
          "(goal >= 20,000 at 64x64 on 2 CPU cores).\n")
PROFILES_NAME = "profiles.md"
PROFILES_HEADER = ("# Profiles\n\nWritten by `python -m gan_lab.bench train --profile N` (newest last), next to the "
                   "benchmark table: after the timed repetitions, N batches of each loop under torch.profiler. "
                   "Per batch: wall time, the host time inside aten ops (the rest is Python: the loop, hooks, "
                   "logging), on a GPU the device's busy time and kernel count; then the ops that cost most, "
                   "each a top-level aten op (with the kernels it launched).\n")
COLUMNS = ("benchmark", "setting", "gan_lab (img/s)", "plain PyTorch (img/s)", "ratio", "goal")


# --- synthetic data -------------------------------------------------------------------------


class SyntheticImages(ImageDataModule):
    """Random uint8 images (a stand-in for a decoded dataset cache)."""

    channels = 3

    def __init__(self, size: int = 4096, num_classes: int = 10, **kwargs) -> None:
        super().__init__(**kwargs)
        self.size = int(size)
        self.num_classes = int(num_classes)
        self.class_names = [str(i) for i in range(self.num_classes)]

    def load_split(self, split):
        g = torch.Generator().manual_seed(0 if split == "train" else 1)
        n = self.size if split == "train" else self.batch_size
        images = torch.randint(0, 256, (n, self.channels, self.image_size, self.image_size),
                               dtype=torch.uint8, generator=g)
        return images, torch.randint(0, self.num_classes, (n,), generator=g)


class DeviceBatches(IterableDataset):
    """``count`` random batches indexed from uint8 images already on the device (no copies)."""

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int, count: int) -> None:
        self.images, self.labels, self.batch_size, self.count = images, labels, batch_size, count

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for _ in range(self.count):
            idx = torch.randint(0, self.images.shape[0], (self.batch_size,), device=self.images.device)
            yield self.images[idx], self.labels[idx]


class DeviceFeed(SyntheticImages):
    """Serves :class:`DeviceBatches` to the Trainer; ``on_after_batch_transfer`` is the real one."""

    def __init__(self, images: Tensor, labels: Tensor, count: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.device_images, self.device_labels, self.count = images, labels, count

    def setup(self, stage: str | None = None) -> None:
        """Nothing to load: batches come from the device tensors."""

    def train_dataloader(self) -> DataLoader:
        return DataLoader(DeviceBatches(self.device_images, self.device_labels, self.train_batch_size, self.count),
                          batch_size=None, num_workers=0)


# --- the two loops ------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock(L.Callback):
    """Times the Trainer from the start of batch ``warmup`` to the end of batch ``count - 1``, with
    ``around`` (a profiler) entered and left at those two points when given."""

    def __init__(self, warmup: int, count: int, device: torch.device, around: ContextManager | None = None) -> None:
        self.warmup, self.count, self.device, self.around = warmup, count, device, around
        self.start = self.end = 0.0
        self.timed = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            sync(self.device)
            if self.around is not None:
                self.around.__enter__()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.warmup <= batch_idx < self.count:
            self.timed += 1
        if batch_idx == self.count - 1:
            sync(self.device)
            self.end = time.perf_counter()
            if self.around is not None:
                self.around.__exit__(None, None, None)


def autocast_for(precision: str, device: torch.device, cache: bool = True) -> Callable[[], object]:
    """A hand-written loop's autocast: around the forward passes of one phase only (without the
    weight-cast cache when the loop is captured as a CUDA graph)."""
    if precision == "32-true":
        return nullcontext
    dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype, cache_enabled=cache)


class ScaledOptimizer:
    """A raw optimizer stepped through a ``GradScaler`` (``16-mixed``): its gradients unscaled, clipped
    by the module's :meth:`~gan_lab.models.base.GAN.on_before_optimizer_step`, then stepped, as
    Lightning steps its optimizers."""

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
    """The module's batch without Lightning: :meth:`gan_lab.models.base.GAN.updates` with raw
    optimizers, ``Tensor.backward`` and the per-phase autocast of ``precision`` (``16-mixed``: a
    ``GradScaler``). ``graphed``: the batch captured as one CUDA graph, as
    ``callbacks.fast_path.cuda_graph`` does (:class:`~gan_lab.callbacks.fast_path.GraphedStep`, after
    ``GRAPH_WARMUP`` eager batches)."""

    GRAPH_WARMUP = 3

    def __init__(self, model, precision: str, device: torch.device, graphed: bool = False) -> None:
        self.model, self.device = model, device
        (self.opt_d, self.opt_g), _ = model.configure_optimizers()
        model.loop_autocast = autocast_for(precision, device, cache=not graphed)
        self.scaler = torch.amp.GradScaler(device.type) if precision == "16-mixed" else None
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
            around: ContextManager | None = None) -> tuple[int, float]:
        """Images timed and seconds, after ``warmup`` untimed batches (the timed ones inside ``around``,
        a profiler, when given)."""
        timed, start = 0, 0.0
        with ExitStack() as timed_part:
            for i, (images, labels) in enumerate(batches):
                if i == warmup:
                    sync(self.device)
                    if around is not None:
                        timed_part.enter_context(around)
                    start = time.perf_counter()
                (self.graphed or self.step)(images, labels)
                timed += images.shape[0] if i >= warmup else 0
            sync(self.device)
            seconds = time.perf_counter() - start
        return timed, seconds


# --- profiles -----------------------------------------------------------------------------


def profiler_for(device: torch.device):
    """A ``torch.profiler`` recording host ops, and the device's kernels on a GPU."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    return profile(activities=activities)


@dataclass
class Profile:
    """Where a loop's time went over ``batches`` batches: ``ops`` maps each top-level aten op (not
    called by another aten op) to ``[calls, host us, device us of the kernels it launched]``;
    ``kernels`` counts the device's kernels and copies, ``device_us`` their time (0 on a CPU)."""

    batches: int
    wall_s: float
    ops: dict[str, list[float]] = field(default_factory=dict)
    kernels: int = 0
    device_us: float = 0.0

    @classmethod
    def of(cls, prof, batches: int, wall_s: float) -> "Profile":
        ops: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
        kernels, device_us = 0, 0.0
        for event in prof.events():
            if event.device_type != torch.autograd.DeviceType.CPU:  # a kernel or a copy on the device
                kernels += 1
                device_us += event.time_range.elapsed_us()
                continue
            parent = event.cpu_parent
            if not event.name.startswith("aten::") or (parent is not None and parent.name.startswith("aten::")):
                continue
            record = ops[event.name]
            record[0] += 1
            record[1] += event.cpu_time_total
            record[2] += event.device_time_total
        return cls(batches, wall_s, dict(ops), kernels, device_us)

    def per_batch(self, value: float) -> float:
        return value / self.batches

    def summary(self) -> str:
        host_ops_ms = self.per_batch(sum(r[1] for r in self.ops.values())) / 1000
        text = (f"{1000 * self.per_batch(self.wall_s):.2f} ms wall, {host_ops_ms:.2f} ms of it in host ops "
                f"({self.per_batch(sum(r[0] for r in self.ops.values())):.0f} ops)")
        if self.kernels:
            text += (f", device busy {self.per_batch(self.device_us) / 1000:.2f} ms "
                     f"({self.per_batch(self.kernels):.0f} kernels and copies)")
        return text


def profile_table(setting: str, ours: Profile, plain: Profile, top: int = 15) -> str:
    """Markdown: the two loops' per-batch summaries and their ``top`` most expensive ops side by side
    (by device time on a GPU, host time on a CPU), the rest in one row."""
    on_device = bool(ours.kernels or plain.kernels)
    col = 2 if on_device else 1

    def cost(name: str) -> float:
        return max(p.per_batch(p.ops.get(name, [0, 0.0, 0.0])[col]) for p in (ours, plain))

    names = sorted(set(ours.ops) | set(plain.ops), key=cost, reverse=True)
    unit = "host ms / device ms" if on_device else "host ms"
    lines = [f"### {setting}", "",
             f"Per batch, over {ours.batches} batches: gan_lab {ours.summary()}; plain loop {plain.summary()}.", "",
             f"| op | gan_lab calls | gan_lab {unit} | plain calls | plain {unit} |", "|---|---|---|---|---|"]

    def cells(p: Profile, chosen: Sequence[str]) -> list[str]:
        calls = sum(p.ops[n][0] for n in chosen if n in p.ops)
        host = sum(p.ops[n][1] for n in chosen if n in p.ops)
        dev = sum(p.ops[n][2] for n in chosen if n in p.ops)
        times = f"{p.per_batch(host) / 1000:.3f}" + (f" / {p.per_batch(dev) / 1000:.3f}" if on_device else "")
        return [f"{p.per_batch(calls):.1f}", times]

    for name in names[:top]:
        lines.append(table_row([name, *cells(ours, [name]), *cells(plain, [name])]))
    if names[top:]:
        lines.append(table_row([f"{len(names) - top} other ops", *cells(ours, names[top:]), *cells(plain, names[top:])]))
    return "\n".join(lines)


# --- configuration ------------------------------------------------------------------------


def compose(overrides: list[str]) -> DictConfig:
    """The config ``gan_lab.run`` would compose, with a throwaway run directory."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=overrides)
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.run_dir = tempfile.mkdtemp(prefix="gan_lab_bench_")
        cfg.run_name = "bench"
    atexit.register(shutil.rmtree, cfg.run_dir, ignore_errors=True)  # a throwaway: gone when the process ends
    return cfg


def bench_config(args: argparse.Namespace) -> DictConfig:
    overrides = [f"model={args.model}", f"data.image_size={args.image_size}",
                 f"data.batch_size={args.batch_size}", f"trainer.precision={args.precision}",
                 "trainer=gpu" if args.device == "cuda" else "trainer=cpu", *args.overrides]
    cfg = compose(overrides)
    grows = cfg.callbacks.get("growth") is not None
    if grows and args.phase is None:
        raise UserError(f"bench train times a step at one fixed resolution, and model={args.model} grows through "
                        f"resolutions (callbacks.growth); time one of its phases with --phase (e.g. --phase 16 "
                        f"--alpha 0.5 for 16x16 halfway through its fade-in).")
    if args.phase is not None and not grows:
        raise UserError(f"--phase {args.phase} times a phase of a growing model (model=pggan); model={args.model} "
                        f"trains at one resolution: drop --phase.")
    twinless = {"d_augment=ada": str((cfg.get("d_augment") or {}).get("_target_", "")).endswith("AdaptiveAugment"),
                "model.extra_g_when": cfg.model.get("extra_g_when") is not None}
    for what, present in twinless.items():
        if present and args.cuda_graph:
            raise UserError(f"--cuda-graph compares gan_lab with a plain loop captured as one CUDA graph, and {what} "
                            f"decides the updates on the host from D's outputs, which that capture does not "
                            f"reproduce; time the model without --cuda-graph, or without {what}.")
    with open_dict(cfg):  # what build_datamodule publishes, for synthetic RGB data
        cfg.callbacks.growth = None  # the bench holds the phase still (FixedPhase)
        cfg.data.channels = 3
        cfg.data.num_classes = args.num_classes
        cfg.data.class_names = [str(i) for i in range(args.num_classes)]
    return cfg


def fresh_model(cfg: DictConfig, device: torch.device, phase: tuple[int, float] | None = None):
    """The GAN module with seed-0 weights on ``device`` (a growing one at ``phase``)."""
    L.seed_everything(0, verbose=False)
    model = build_model(cfg).to(device)
    if phase is not None:
        model.set_phase(*phase)
    return model


class FixedPhase(L.Callback):
    """Holds a growing model at one phase (``(resolution, alpha)``) through a fit, in place of its
    growth schedule."""

    def __init__(self, phase: tuple[int, float]) -> None:
        self.phase = phase

    def on_fit_start(self, trainer, pl_module) -> None:
        pl_module.set_phase(*self.phase)


def one_epoch(cfg: DictConfig, batches: int | None = None, as_run: bool = False) -> None:
    """Trainer settings of a measured fit: one epoch (of ``batches``), no model summary, and a
    progress bar and checkpoints only when timed as a training run has them."""
    with open_dict(cfg):
        cfg.trainer.max_epochs = 1
        if batches is not None:
            cfg.trainer.limit_train_batches = batches
        cfg.trainer.enable_progress_bar = as_run
        cfg.trainer.enable_checkpointing = as_run
        cfg.trainer.enable_model_summary = False


def compare_rates(ours: Sequence[tuple[int, float]], plain: Sequence[tuple[int, float]]) -> tuple[float, float, float]:
    """(images, seconds) of each repetition of the two loops -> median images/s of each and the median
    of the ratios of repetition k of one loop to repetition k of the other."""
    if not ours or len(ours) != len(plain):
        raise ValueError(f"need as many timings of each loop, at least one ({len(ours)} and {len(plain)})")
    rates_ours = [n / seconds for n, seconds in ours]
    rates_plain = [n / seconds for n, seconds in plain]
    ratios = [a / b for a, b in zip(rates_ours, rates_plain)]
    return statistics.median(rates_ours), statistics.median(rates_plain), statistics.median(ratios)


def bench_train(args: argparse.Namespace) -> tuple[list[str], str | None]:
    """The table row of a train benchmark, and with ``--profile`` the two loops' profile (markdown)."""
    device = torch.device(args.device)
    cfg = bench_config(args)
    torch.manual_seed(0)
    phase = None if args.phase is None else (args.phase, args.alpha)
    side = args.image_size if phase is None else args.phase  # a phase's images, as its DataModule serves them
    images = torch.randint(0, 256, (4096, 3, side, side), dtype=torch.uint8).to(device)
    labels = torch.randint(0, args.num_classes, (4096,)).to(device)
    count = args.warmup + args.steps
    mode = compile_mode(args.compile)

    plain_model = fresh_model(cfg, device, phase)
    if args.channels_last:
        use_channels_last(plain_model)
    compile_nets(plain_model, mode, device.type)
    plain = PlainLoop(plain_model, cfg.trainer.precision, device, graphed=args.cuda_graph)
    gan = fresh_model(cfg, device, phase)
    served = args.batch_size * gan.draws_per_batch  # real images a batch (model.fresh_reals: one draw per D update)
    held = [] if phase is None else [FixedPhase(phase)]
    # one instance: compiles once, in the first fit (a graph is captured again in each fit's warm-up)
    fast_path = FastPath(args.channels_last, mode, cuda_graph=args.cuda_graph,
                         graph_warmup=PlainLoop.GRAPH_WARMUP)

    as_run = args.callbacks == "run"
    one_epoch(cfg, count, as_run)
    with open_dict(cfg):
        cfg.callbacks.fast_path = None  # the bench's own instance, shared by the repetitions

    def lightning_run(stop: int = count, around: ContextManager | None = None) -> tuple[int, float]:
        clock = Clock(args.warmup, stop, device, around)
        feed = DeviceFeed(images, labels, count, image_size=side, batch_size=args.batch_size,
                          num_classes=args.num_classes)
        serve_draws(gan, feed)
        if not as_run:
            build_trainer(cfg, [*held, clock, fast_path], []).fit(gan, datamodule=feed)
            return clock.timed * served, clock.end - clock.start
        # a training run's callbacks and loggers, writing into a temporary run directory
        with tempfile.TemporaryDirectory(prefix="gan_lab_bench_run_") as run_dir:
            with open_dict(cfg):
                cfg.run_dir = run_dir
            trainer = build_trainer(cfg, [*held, *build_callbacks(cfg), fast_path, clock], build_loggers(cfg))
            trainer.fit(gan, datamodule=feed)
        return clock.timed * served, clock.end - clock.start

    def plain_run() -> tuple[int, float]:
        return plain.run(iter(DeviceBatches(images, labels, served, count)), args.warmup)

    timings: dict[str, list[tuple[int, float]]] = {"gan_lab": [], "plain": []}
    for rep in range(args.repeats):
        order = [("gan_lab", lightning_run), ("plain", plain_run)]
        for name, fn in order if rep % 2 == 0 else reversed(order):
            timings[name].append(fn())
    ours, theirs, ratio = compare_rates(timings["gan_lab"], timings["plain"])
    at = "" if phase is None else f" at {args.phase}x{args.phase} alpha {args.alpha:g}"
    setting = (f"{args.model}-{args.image_size}{at}, batch {args.batch_size}, {cfg.trainer.precision}, "
               f"channels_last {'on' if args.channels_last else 'off'}, compile {mode or 'off'}, "
               f"{'one CUDA graph per batch (both loops), ' if args.cuda_graph else ''}"
               f"{device.type}, {args.steps} steps x {args.repeats}")
    if as_run:
        loggers = ", ".join(name for name, node in (cfg.get("logger") or {}).items() if node is not None)
        setting += f", with the run's callbacks and loggers ({loggers or 'none'})"
    if args.overrides:
        setting += "; " + " ".join(args.overrides)
    if args.epoch_images:
        setting += (f"; epoch of {args.epoch_images:,} images: {args.epoch_images / ours:.1f} s "
                    f"(plain {args.epoch_images / theirs:.1f} s)")
    row = ["train", setting, f"{ours:,.0f}", f"{theirs:,.0f}", f"{ratio:.3f}", ">= 0.97"]
    if not args.profile:
        return row, None
    # one more run of each loop, after the timed ones, with the profiler on over `--profile` batches
    stop = args.warmup + args.profile

    def profiled(run: Callable[[ContextManager], tuple[int, float]]) -> Profile:
        prof = profiler_for(device)
        images_timed, seconds = run(prof)
        return Profile.of(prof, images_timed // served, seconds)

    return row, profile_table(setting, profiled(lambda prof: lightning_run(stop, prof)),
                              profiled(lambda prof: plain.run(iter(DeviceBatches(images, labels, served, stop)),
                                                              args.warmup, prof)))


def bench_data(args: argparse.Namespace) -> tuple[list[str], None]:
    """Images/s served by an ImageDataModule at ``--data-size`` (DataLoader + batch transfer)."""
    device = torch.device(args.device)
    dm = SyntheticImages(size=args.data_images, image_size=args.data_size, batch_size=args.batch_size,
                         num_workers=args.num_workers, num_classes=args.num_classes)
    dm.setup("fit")
    if args.on_device:  # what data.on_device does: the uint8 split lives on the device, batches are indexed there
        loader = DeviceLoader(dm.dataset("train"), args.batch_size, device, EpochSampler(args.data_images))
    else:
        loader = dm.train_dataloader()

    def epoch() -> tuple[int, float]:
        n, start = 0, time.perf_counter()
        for batch in loader:
            images, labels = dm.on_after_batch_transfer(
                (batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)), 0)
            n += images.shape[0]
        sync(device)
        return n, time.perf_counter() - start

    epoch()  # warm-up (first touch of the memory, worker start)
    rates = []
    for e in range(args.repeats):
        loader.sampler.set_epoch(e + 1)
        n, seconds = epoch()
        rates.append(n / seconds)
    served = "held on the device" if args.on_device else f"DataLoader, num_workers {args.num_workers}"
    setting = (f"{args.data_size}x{args.data_size}x3 uint8, {args.data_images} images, batch {args.batch_size}, "
               f"{served}, {device.type}, {torch.get_num_threads()} threads")
    return ["data", setting, f"{statistics.median(rates):,.0f}", "", "", ">= 20,000"], None


# --- report -------------------------------------------------------------------------------


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    return (f"CPU {cpu_name()} ({cores} cores), GPU {gpu}, torch {torch.__version__}, "
            f"lightning {L.__version__}, Python {platform.python_version()}")


def table_header() -> str:
    return "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS)


def table_row(row: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "/") for cell in row) + " |"


def section_header(command: str) -> str:
    when = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return f"## {when}\n\nMachine: {machine()}\n\nCommand: `{command}`\n\n{table_header()}"


# --- suites ---------------------------------------------------------------------------------

#: ``python -m gan_lab.bench suite``: the tracked rows per device, each the options of one benchmark
#: (they override the suite's own options).
SUITES: dict[str, list[str]] = {
    "cuda": [
        *(f"train --model dcgan --image-size 64 --batch-size {b} {opts}"
          for b in (128, 512)
          for opts in ("--precision 32",
                       "--precision bf16-mixed --channels-last",
                       "--precision bf16-mixed --channels-last "
                       "optimizer.discriminator.fused=true optimizer.generator.fused=true",
                       # as a training run has it: grids, checkpoints, curves, guard, progress bar, CSV
                       "--precision bf16-mixed --channels-last --callbacks run")),
        # a WikiArt-genre epoch: 45,503 images at 64x64, ArtGAN
        # profiled (--profile: profiles.md): where ArtGAN's bf16 time goes, against fp32 and the plain loop
        "train --model artgan --image-size 64 --batch-size 128 --precision 32 --epoch-images 45503 --profile 10",
        "train --model artgan --image-size 64 --batch-size 128 --precision bf16-mixed --channels-last "
        "--epoch-images 45503 --profile 10",
        "train --model artgan --image-size 64 --batch-size 512 --precision bf16-mixed --channels-last "
        "--epoch-images 45503",
        "data --data-size 64 --batch-size 128 --data-images 45503",
        "data --data-size 64 --batch-size 128 --data-images 45503 --on-device",
        # the whole batch as one CUDA graph, in both loops
        *(f"train --model dcgan --image-size 64 --batch-size {b} {opts} --cuda-graph"
          for b, opts in ((128, "--precision bf16-mixed --channels-last"), (512, "--precision bf16-mixed --channels-last"),
                          (128, "--precision 32"), (512, "--precision 32"),
                          (1024, "--precision bf16-mixed --channels-last"),
                          (512, "--precision bf16-mixed --channels-last "
                                "optimizer.discriminator.fused=true optimizer.generator.fused=true"))),
        *(f"train --model artgan --image-size 64 --batch-size {b} --precision bf16-mixed --channels-last "
          f"--cuda-graph --epoch-images 45503 --profile 10" for b in (128, 512)),
        # PGGAN with the Pokemon preset's nets (512-d latent), held halfway through a fade-in, eager then captured
        *(f"train --model pggan --image-size 128 --batch-size {b} --phase {r} --alpha 0.5{graph} noise.latent_dim=512"
          for b, r in ((4, 8), (4, 32), (2, 128)) for graph in ("", " --cuda-graph")),
        # compilation last: each row compiles both loops (minutes with max-autotune)
        *(f"train --model dcgan --image-size 64 --batch-size {b} --precision bf16-mixed {opts}"
          for b in (128, 512)
          for opts in ("--compile default", "--channels-last --compile default",
                       "--compile max-autotune-no-cudagraphs",
                       "--channels-last --compile default --cuda-graph")),
        "train --model artgan --image-size 64 --batch-size 128 --precision bf16-mixed "
        "--compile max-autotune-no-cudagraphs --epoch-images 45503",
    ],
    "cpu": [
        # the bundled-digits setting of `make run` (DCGAN-32, width 32, batch 64)
        "train --model dcgan --image-size 32 --batch-size 64 --steps 20 --warmup 3 "
        "noise.latent_dim=64 model.generator.width=32 model.discriminator.width=32",
        "train --model dcgan --image-size 32 --batch-size 64 --steps 20 --warmup 3 --callbacks run "
        "noise.latent_dim=64 model.generator.width=32 model.discriminator.width=32",
        "train --model dcgan --image-size 32 --batch-size 64 --steps 10 --warmup 2 --precision bf16-mixed "
        "noise.latent_dim=64 model.generator.width=32 model.discriminator.width=32",
        # tiny nets: the step is mostly Python, so this row shows the loop's own overhead
        "train --model dcgan --image-size 16 --batch-size 8 --steps 40 --profile 20 "
        "noise.latent_dim=16 model.generator.width=8 model.discriminator.width=8",
        "data --data-size 64 --batch-size 64",
        "data --data-size 64 --batch-size 64 --on-device",
    ],
}
SUITE_OPTIONS = ("--steps", "--warmup", "--repeats", "--num-workers")


def suite_jobs(args: argparse.Namespace) -> list[argparse.Namespace]:
    """The parsed options of every benchmark of the suite for ``args.device``."""
    if args.overrides:
        raise UserError(f"bench suite takes no config overrides (got {' '.join(args.overrides)}); "
                        f"run `python -m gan_lab.bench train ... <overrides>` for a single setting.")
    base = ["--device", args.device, "--output", "-"]
    for option in SUITE_OPTIONS:
        base += [option, str(getattr(args, option[2:].replace("-", "_")))]
    rows = SUITES[args.device]
    chosen = suite_rows(args.rows, len(rows))
    return [parse_args([*base, *rows[i].split()]) for i in chosen]


def suite_rows(spec: str | None, n: int) -> list[int]:
    """Row numbers from ``--rows`` (``0-5,9``; all when ``None``)."""
    if spec is None:
        return list(range(n))
    chosen: list[int] = []
    try:
        for part in spec.split(","):
            first, _, last = part.partition("-")
            chosen += range(int(first), int(last or first) + 1)
    except ValueError:
        chosen = [-1]
    if not chosen or min(chosen) < 0 or max(chosen) >= n:
        raise UserError(f"--rows {spec} must list row numbers or ranges from 0 to {n - 1}, e.g. --rows 0-3,7 "
                        f"(--list shows them).")
    return chosen


def failed_row(args: argparse.Namespace, exc: Exception) -> list[str]:
    """A suite row whose benchmark raised: its options and the error, so the other rows still run."""
    options = " ".join(a for a in args.argv if a not in ("--device", args.device, "--output", "-"))
    message = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return [args.what, options, f"failed: {type(exc).__name__}: {message}", "", "", ""]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m gan_lab.bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("what", nargs="?", default="all", choices=("train", "data", "all", "suite"),
                   help="suite: every tracked row for the device (see SUITES in gan_lab/bench.py)")
    p.add_argument("overrides", nargs="*", help="config overrides for the train benchmark, e.g. noise.latent_dim=64")
    p.add_argument("--model", default="dcgan", help="a config of conf/model/")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precision", default="32", choices=sorted(PRECISIONS))
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", default="false", help="false | default | max-autotune-no-cudagraphs")
    p.add_argument("--cuda-graph", action="store_true",
                   help="train benchmark: callbacks.fast_path.cuda_graph=true, and the plain loop captured alike")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    p.add_argument("--steps", type=int, default=50, help="timed batches per repetition")
    p.add_argument("--warmup", type=int, default=5, help="untimed batches per repetition")
    p.add_argument("--repeats", type=int, default=5, help="alternated repetitions of each loop")
    p.add_argument("--num-classes", type=int, default=10, help="labels of the synthetic data")
    p.add_argument("--data-size", type=int, default=64, help="image side of the data benchmark")
    p.add_argument("--data-images", type=int, default=16384, help="images held by the data benchmark")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers of the data benchmark")
    p.add_argument("--on-device", action="store_true",
                   help="data benchmark: serve from images held on the device (data.on_device)")
    p.add_argument("--rows", default=None, help="suite: only these rows, e.g. 0-3,7 (see --list)")
    p.add_argument("--list", action="store_true", help="suite: print the numbered rows and exit")
    p.add_argument("--callbacks", default="bare", choices=("bare", "run"),
                   help="train benchmark: the module alone, or with the callbacks and loggers of a run "
                        "(sample grids, checkpoints, curves, divergence guard, progress bar, CSV, ...)")
    p.add_argument("--phase", type=int, default=None,
                   help="train benchmark of a growing model (pggan): the resolution it is held at")
    p.add_argument("--alpha", type=float, default=1.0, help="with --phase: the fade-in weight it is held at")
    p.add_argument("--profile", type=int, default=0,
                   help="train benchmark: then profile this many batches of each loop (torch.profiler) and write "
                        f"where the time goes to {PROFILES_NAME} next to --output")
    p.add_argument("--epoch-images", type=int, default=0,
                   help="train benchmark: also report the time of an epoch of this many images")
    p.add_argument("--output", default=str(DEFAULT_OUTPUT), help="markdown file appended to ('-': none)")
    args = p.parse_intermixed_args(argv)
    args.argv = list(argv or [])
    args.precision = PRECISIONS[args.precision]
    if args.device == "cuda" and not torch.cuda.is_available() and not args.list:
        raise UserError("--device cuda was requested but no CUDA device is available; use --device cpu.")
    if min(args.steps, args.repeats) < 1 or args.warmup < 0:
        raise UserError("--steps and --repeats must be >= 1 and --warmup >= 0; e.g. --steps 50 --warmup 5.")
    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha {args.alpha} must lie in [0, 1] (0: the new layers start fading in, 1: grown in).")
    if not 0 <= args.profile <= args.steps:
        raise UserError(f"--profile {args.profile} must be between 0 (off) and --steps {args.steps}: the profiled "
                        f"batches are among the timed ones; e.g. --profile 10.")
    if args.cuda_graph and args.device != "cuda" and not args.list:
        raise UserError("--cuda-graph captures the step on a GPU; use it with --device cuda.")
    if args.cuda_graph and args.warmup <= PlainLoop.GRAPH_WARMUP:
        raise UserError(f"--cuda-graph needs --warmup >= {PlainLoop.GRAPH_WARMUP + 1} (the eager batches before the "
                        f"capture and the capture itself stay untimed); got --warmup {args.warmup}.")
    return args


def run_benchmark(args: argparse.Namespace) -> tuple[list[str], str | None]:
    """A benchmark's table row, and its profile (markdown) when one was asked for."""
    return bench_train(args) if args.what == "train" else bench_data(args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # keep the table readable
    warnings.filterwarnings("ignore", message=".*(val_dataloader|LeafSpec|does not have many workers|"
                                              "smaller than the logging interval).*")
    try:
        args = parse_args(argv)
        if args.what == "suite" and args.list:
            for i, row in enumerate(SUITES[args.device]):
                print(f"{i:3d}  {row}")
            return 0
        if args.what == "suite":
            jobs = suite_jobs(args)
        else:
            jobs = [argparse.Namespace(**{**vars(args), "what": what})
                    for what in ("train", "data") if args.what in (what, "all")]
    except UserError as exc:
        print(f"gan_lab: error: {exc}", file=sys.stderr)
        return 2
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    out = None if args.output == "-" else Path(args.output)

    def emit(text: str) -> None:
        """Print a line of the report and append it to the output file at once."""
        print(text, flush=True)
        if out is not None:
            with out.open("a") as f:
                f.write(text + "\n")

    def start_section() -> None:
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            previous = out.read_text() if out.is_file() else HEADER
            out.write_text(previous.rstrip("\n") + "\n\n")
        emit(section_header("python -m gan_lab.bench " + " ".join(argv)))

    profiles_out = None if out is None else out.with_name(PROFILES_NAME)
    profiled = False

    def emit_profile(text: str) -> None:
        """Print a profile and append it to the profiles file next to the output."""
        nonlocal profiled
        print("\n" + text + "\n", flush=True)
        if profiles_out is None:
            return
        previous = profiles_out.read_text() if profiles_out.is_file() else PROFILES_HEADER
        head = "" if profiled else section_header("python -m gan_lab.bench " + " ".join(argv)).rsplit("\n\n", 1)[0]
        profiles_out.write_text(previous.rstrip("\n") + "\n\n" + (head + "\n\n" if head else "") + text + "\n")
        profiled = True

    for i, job in enumerate(jobs):
        profile = None
        try:
            row, profile = run_benchmark(job)
        except Exception as exc:  # a suite reports a failing setting (e.g. a compile mode) and goes on
            if args.what == "suite":
                row = failed_row(job, exc)
            elif isinstance(exc, UserError):
                print(f"gan_lab: error: {exc}", file=sys.stderr)
                return 2
            else:
                raise
        if i == 0:
            start_section()  # only once a row exists: a setting refused up front writes nothing
        emit(table_row(row))
        if profile is not None:
            emit_profile(profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
