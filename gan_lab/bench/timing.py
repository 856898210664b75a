"""The measurements: a train benchmark (gan_lab's Trainer against the plain loop, on synthetic
uint8 data held on the device) and a data benchmark (an ImageDataModule serving batches)."""
from __future__ import annotations

import argparse
import atexit
import shutil
import statistics
import tempfile
import time
from contextlib import nullcontext
from typing import Callable, ContextManager, Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import LambdaCallback
from omegaconf import DictConfig, open_dict
from torch import Tensor
from torch.profiler import ProfilerActivity, profile
from torch.utils.data import DataLoader

from gan_lab import CONFIG_DIR
from gan_lab.bench.plain import DeviceBatches, PlainLoop, sync
from gan_lab.bench.profiles import Profile, profile_table
from gan_lab.build import build_callbacks, build_loggers, build_model, build_trainer, serve_draws
from gan_lab.callbacks.fast_path import FastPath, compile_mode, compile_nets
from gan_lab.data.base import EpochSampler, ImageDataModule
from gan_lab.data.disk import DeviceLoader
from gan_lab.errors import UserError


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


class Clock(L.Callback):
    """Times the Trainer from the start of batch ``warmup`` to the end of batch ``count - 1``, with
    ``around`` (e.g. a profiler) entered and left at those two points."""

    def __init__(self, warmup: int, count: int, device: torch.device, around: ContextManager = nullcontext()) -> None:
        self.warmup, self.count, self.device, self.around = warmup, count, device, around
        self.start = self.end = 0.0
        self.timed = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            sync(self.device)
            self.around.__enter__()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.warmup <= batch_idx < self.count:
            self.timed += 1
        if batch_idx == self.count - 1:
            sync(self.device)
            self.end = time.perf_counter()
            self.around.__exit__(None, None, None)


def compose(overrides: list[str]) -> DictConfig:
    """The config ``gan_lab.run`` would compose, with a throwaway run directory."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=overrides)
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
        cfg.callbacks.growth = None  # the bench holds the phase still (bench_train)
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


def one_epoch(cfg: DictConfig, batches: int | None = None, as_run: bool = False) -> None:
    """Trainer settings of a measured fit: one epoch (of ``batches``), no model summary, a progress bar and
    checkpoints only ``as_run``."""
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
    rates_ours, rates_plain = ([n / seconds for n, seconds in loop] for loop in (ours, plain))
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
        plain_model.to(memory_format=torch.channels_last)
    compile_nets(plain_model, mode, device.type)
    plain = PlainLoop(plain_model, cfg.trainer.precision, device, graphed=args.cuda_graph)
    gan = fresh_model(cfg, device, phase)
    served = args.batch_size * gan.draws_per_batch  # real images a batch (model.fresh_reals: one draw per D update)
    # a growing model held at one phase through a fit, in place of its growth schedule
    held = [] if phase is None else [LambdaCallback(on_fit_start=lambda trainer, module: module.set_phase(*phase))]
    # one instance: compiles once, in the first fit (a graph is captured again in each fit's warm-up)
    fast_path = FastPath(args.channels_last, mode, cuda_graph=args.cuda_graph,
                         graph_warmup=PlainLoop.GRAPH_WARMUP)

    as_run = args.callbacks == "run"
    one_epoch(cfg, count, as_run)
    with open_dict(cfg):
        cfg.callbacks.fast_path = None  # the bench's own instance, shared by the repetitions

    def lightning_run(stop: int = count, around: ContextManager = nullcontext()) -> tuple[int, float]:
        clock = Clock(args.warmup, stop, device, around)
        feed = DeviceFeed(images, labels, count, image_size=side, batch_size=args.batch_size,
                          num_classes=args.num_classes)
        serve_draws(gan, feed)
        if not as_run:
            build_trainer(cfg, [*held, clock, fast_path], []).fit(gan, datamodule=feed)
        else:  # a training run's callbacks and loggers, writing into a temporary run directory
            with tempfile.TemporaryDirectory(prefix="gan_lab_bench_run_") as run_dir:
                with open_dict(cfg):
                    cfg.run_dir = run_dir
                trainer = build_trainer(cfg, [*held, *build_callbacks(cfg), fast_path, clock], build_loggers(cfg))
                trainer.fit(gan, datamodule=feed)
        return clock.timed * served, clock.end - clock.start

    def plain_run(stop: int = count, around: ContextManager = nullcontext()) -> tuple[int, float]:
        return plain.run(iter(DeviceBatches(images, labels, served, stop)), args.warmup, around)

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

    def profiled(run: Callable[[int, ContextManager], tuple[int, float]]) -> Profile:
        """One more run of a loop, after the timed ones, with the profiler on over ``--profile`` batches (host ops,
        and the device's kernels on a GPU)."""
        prof = profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else []))
        images_timed, seconds = run(args.warmup + args.profile, prof)
        return Profile.of(prof, images_timed // served, seconds)

    return row, profile_table(setting, profiled(lightning_run), profiled(plain_run))


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

    def epoch(e: int) -> float:
        """Images/s of epoch ``e``."""
        loader.sampler.set_epoch(e)
        n, start = 0, time.perf_counter()
        for batch in loader:
            images, labels = dm.on_after_batch_transfer(
                (batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)), 0)
            n += images.shape[0]
        sync(device)
        return n / (time.perf_counter() - start)

    epoch(0)  # warm-up (first touch of the memory, worker start)
    rates = [epoch(e + 1) for e in range(args.repeats)]
    served = "held on the device" if args.on_device else f"DataLoader, num_workers {args.num_workers}"
    setting = (f"{args.data_size}x{args.data_size}x3 uint8, {args.data_images} images, batch {args.batch_size}, "
               f"{served}, {device.type}, {torch.get_num_threads()} threads")
    return ["data", setting, f"{statistics.median(rates):,.0f}", "", "", ">= 20,000"], None
