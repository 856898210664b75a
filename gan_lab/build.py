"""Wiring shared by the entry points: config -> DataModule, model, callbacks, loggers, Trainer.

The only place config nodes become objects; ``run``, ``evaluate`` and ``generate`` build through here.
"""
from __future__ import annotations

import contextlib
import math
import re
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import get_object, instantiate
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from gan_lab.callbacks.limit import BatchLimit
from gan_lab.constraints import argument_defaults, argument_hints, example, fits, refusal
from gan_lab.errors import UserError, unwrap_user_error
from gan_lab.precision import precision_plugins, training_precision

#: facts a DataModule publishes into ``cfg.data`` so that model configs can interpolate them
DATA_FACTS = ("channels", "num_classes", "class_names")


def check_types(node: Any, what: str) -> None:
    """Refuse a value of a ``_target_`` node (``what``: its key) that does not fit its argument's declared type
    and range (:mod:`gan_lab.constraints`)."""
    if isinstance(node, ListConfig):
        for i, item in enumerate(node):
            check_types(item, f"{what}[{i}]")
        return
    if not isinstance(node, DictConfig):
        return
    hints, defaults = {}, {}
    target = node.get("_target_")
    if isinstance(target, str):
        with contextlib.suppress(Exception):  # an unknown target is reported by instantiate itself
            obj = get_object(target)
            hints, defaults = argument_hints(obj, target), argument_defaults(obj)
    for key in node:
        if str(key).startswith("_"):
            continue
        value = node[key]
        if isinstance(value, DictConfig) or (
                isinstance(value, ListConfig) and any(isinstance(v, (DictConfig, ListConfig)) for v in value)):
            # an interpolated node (data.augment: ${augment}) is named where the user sets it
            source = OmegaConf.to_container(node, resolve=False)[key] if OmegaConf.is_interpolation(node, key) else ""
            found = re.fullmatch(r"\$\{([\w.]+)\}", str(source))
            check_types(value, found.group(1) if found else f"{what}.{key}")
            continue
        if isinstance(value, ListConfig):
            value = OmegaConf.to_container(value, resolve=True)
        if key in hints and not fits(value, hints[key]):
            raise refusal(f"{what}.{key}", value, hints[key], example(hints[key], defaults.get(key)),
                          target.rsplit(".", 1)[-1])


def instantiate_checked(node: DictConfig | None, what: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` with user mistakes turned into one sentence naming the key."""
    if node is None:
        return None
    check_types(node, what)
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        user = unwrap_user_error(exc)
        if user is not None:
            raise user from None
        cause = exc.__cause__
        if isinstance(cause, TypeError) and "argument" in str(cause):
            raise UserError(f"{what}: {cause}; check the keys under `{what}` "
                            f"(see conf/{what.split('.')[0]}/).") from None
        if isinstance(cause, (RuntimeError, MemoryError)) and "allocate" in str(cause):  # an absurd size or width
            found = re.search(r"allocate (\d+) bytes", str(cause))
            need = f" ({int(found.group(1)) / 2**30:,.0f} GiB for one tensor)" if found else ""
            raise UserError(f"{what} cannot be built: it needs more memory than this machine has{need}; use a smaller "
                            f"data.image_size or narrower nets (the widths or hidden sizes under `{what}`).") from None
        # Lightning's own check of its arguments (an unknown precision, strategy or accelerator, ...)
        if isinstance(cause, MisconfigurationException) or (what == "trainer" and isinstance(cause, ValueError)):
            message = " ".join(str(cause).split()).rstrip(".")
            raise UserError(f"{what}: {message}; fix the values under `{what}` "
                            f"(see conf/{what.split('.')[0]}/).") from None
        raise


def publish_data_facts(cfg: DictConfig, dm: L.LightningDataModule) -> dict:
    """Write the DataModule's facts (channels, classes) into ``cfg.data``; returns them."""
    facts = {}
    with open_dict(cfg):
        for key in DATA_FACTS:
            value = getattr(dm, key)
            facts[key] = cfg.data[key] = list(value) if isinstance(value, (list, tuple)) else value
    return facts


def build_datamodule(cfg: DictConfig, setup: bool = True) -> L.LightningDataModule:
    """Instantiate the DataModule, learn its facts without decoding (its ``check``) and publish them into
    ``cfg.data``; with ``setup``, also decode the data (:func:`setup_datamodule`)."""
    dm = instantiate_checked(cfg.data, "data")
    dm.prepare_data()
    check = getattr(dm, "check", None)
    if callable(check):
        check()
    publish_data_facts(cfg, dm)
    if setup:
        setup_datamodule(cfg, dm)
    return dm


def setup_datamodule(cfg: DictConfig, dm: L.LightningDataModule) -> None:
    """Decode the data (``setup("fit")``); the facts must be those the model was built from."""
    before = {key: cfg.data.get(key) for key in DATA_FACTS}
    dm.setup("fit")
    after = publish_data_facts(cfg, dm)
    changed = [key for key in DATA_FACTS if before[key] is not None and before[key] != after[key]]
    if changed:  # a DataModule that learns its classes only while decoding: a bug, not a user's mistake
        raise RuntimeError(f"{type(dm).__name__} changed {changed} during setup; it must know them after check().")


def serve_draws(model: torch.nn.Module, dm: L.LightningDataModule) -> None:
    """Make the DataModule serve the real-image draws a training batch of ``model`` takes (with
    ``model.fresh_reals``, one per discriminator update); refused where it cannot."""
    draws = getattr(model, "draws_per_batch", 1)
    if draws == 1:
        return
    if not hasattr(dm, "draws_per_batch"):
        raise UserError(f"model.fresh_reals=true needs a DataModule that serves several draws a batch, and "
                        f"{type(dm).__name__} does not; derive it from gan_lab.data.ImageDataModule or set "
                        f"model.fresh_reals=false.")
    if not getattr(dm, "drop_last", True):
        raise UserError(f"model.fresh_reals=true needs data.drop_last=true: an epoch's last, incomplete batch cannot "
                        f"give each of the {draws} critic updates its own data.batch_size real images.")
    dm.draws_per_batch = draws


def batches_per_epoch(dm: L.LightningDataModule, world_size: int = 1) -> int | None:
    """Training batches one process serves per epoch (``None`` for a DataModule without batch_size)."""
    batch = getattr(dm, "batch_size", None)
    if batch is None or not hasattr(dm, "dataset"):
        return None
    batch *= getattr(dm, "draws_per_batch", 1)
    n = len(dm.dataset("train")) // max(1, world_size)
    return n // batch if getattr(dm, "drop_last", True) else -(-n // batch)


def check_batch_size(model: torch.nn.Module, dm: L.LightningDataModule, world_size: int = 1,
                     limit_train_batches: int | float | None = None) -> None:
    """For nets with BatchNorm1d, refuse a batch of one image: ``data.batch_size`` < 2 or a last incomplete
    batch of one that the epoch serves under ``limit_train_batches``."""
    layers = [name for name, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm1d)]
    batch = getattr(dm, "batch_size", None)
    if not layers or batch is None:
        return
    net = layers[0].split(".")[0]
    if batch < 2:
        raise UserError(f"data.batch_size={batch} is too small for model.{net}: its BatchNorm1d layers "
                        f"({layers[0]}) need at least 2 images per batch in training; use data.batch_size>=2.")
    if getattr(dm, "drop_last", True) is False:
        n = len(dm.dataset("train")) // max(1, world_size)
        batches = batches_per_epoch(dm, world_size)  # the last incomplete batch included
        if isinstance(limit_train_batches, float):
            served = int(batches * limit_train_batches)
        else:
            served = batches if limit_train_batches is None else min(batches, int(limit_train_batches))
        if n % batch == 1 and served == batches:
            raise UserError(f"data.drop_last=false leaves a last batch of one image ({n} training images in "
                            f"batches of data.batch_size={batch}), which the BatchNorm1d layers of model.{net} "
                            f"cannot train on; set data.drop_last=true or another data.batch_size.")


def build_model(cfg: DictConfig) -> L.LightningModule:
    """The GAN LightningModule with its noise, loss, optimisers and schedulers."""
    noise = instantiate_checked(cfg.noise, "noise")
    loss = instantiate_checked(cfg.loss, "loss")
    optimizer = {k: instantiate_checked(v, f"optimizer.{k}") for k, v in cfg.optimizer.items()}
    scheduler = {k: instantiate_checked(v, f"scheduler.{k}") for k, v in (cfg.get("scheduler") or {}).items()}
    for key, factory in optimizer.items():
        probe(factory, f"optimizer.{key}", [torch.nn.Parameter(torch.zeros(1))])
    for key, factory in scheduler.items():
        if factory is not None:
            probe(factory, f"scheduler.{key}", torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0))
    node = cfg.get("d_augment")
    d_augment = instantiate_checked(node, "d_augment") if node is not None and node.get("_target_") else None
    return instantiate_checked(cfg.model, "model", noise=noise, loss=loss, optimizer=optimizer, scheduler=scheduler,
                d_augment=d_augment)


def probe(factory: Any, what: str, target: Any) -> None:
    """Build an optimiser or scheduler once on a probe ``target``; a bad value (negative lr, betas) is refused."""
    try:
        factory(target)
    except UserError:
        raise
    except (ValueError, TypeError) as exc:
        raise UserError(f"{what}: {exc}; fix the values under `{what}` (see conf/{what.split('.')[0]}/).") from None


def _targets(cfg: DictConfig, group: str) -> list[tuple[str, DictConfig]]:
    """The non-null entries of a group of named objects; refuses one without ``_target_``."""
    entries = [(name, node) for name, node in (cfg.get(group) or {}).items() if node is not None]
    for name, node in entries:
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise UserError(f"{group}.{name} has no _target_, so gan_lab cannot build it; pick an option "
                            f"from conf/{group}/ or give {group}.{name}._target_=<class>.")
    return entries


#: the callbacks that together make a resumed run equal the uninterrupted one: both or neither
EXACT_RESUME = ("rng_state", "epoch_position")


def exact_resume(cfg: DictConfig) -> bool:
    """Whether a resume continues the run exactly: both :data:`EXACT_RESUME` callbacks are on; one alone is refused."""
    callbacks = cfg.get("callbacks") or {}
    on = [name for name in EXACT_RESUME if callbacks.get(name) is not None]
    if len(on) == 1:
        off = next(name for name in EXACT_RESUME if name not in on)
        raise UserError(f"callbacks.{off}=null with callbacks.{on[0]} on makes a resumed run differ from the "
                        f"uninterrupted one anyway; turn both off for resumes that need not be exact "
                        f"(callbacks.{on[0]}=null too), or keep both.")
    return bool(on)


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    exact_resume(cfg)
    return [instantiate_checked(node, f"callbacks.{name}") for name, node in _targets(cfg, "callbacks")]


def build_loggers(cfg: DictConfig) -> list:
    loggers = []
    for name, node in _targets(cfg, "logger"):
        extra = {}
        if name == "wandb" and node.get("group") is None and in_multirun():  # a sweep's runs share a W&B group
            sweep_dir = Path(HydraConfig.get().sweep.dir)
            extra["group"] = f"{sweep_dir.parent.name}/{sweep_dir.name}"  # <run_name>/<date_time>
        loggers.append(instantiate_checked(node, f"logger.{name}", **extra))
    return loggers


def in_multirun() -> bool:
    """Whether this process runs a job of a Hydra multirun."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def build_trainer(cfg: DictConfig, callbacks: list, loggers: list) -> L.Trainer:
    """The Trainer; mixed precision autocasts each D/G update (:mod:`gan_lab.precision`). ``trainer.max_batches``
    becomes a :class:`BatchLimit`; ``trainer.enable_progress_bar=false`` drops the progress bar callback."""
    if cfg.trainer.get("enable_progress_bar") is False:
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    node = cfg.trainer.copy()
    with open_dict(node):
        max_batches = node.pop("max_batches", None)  # gan_lab's own key (training batches), not a Trainer argument
    if max_batches is not None:
        callbacks = [BatchLimit(max_batches), *callbacks]
    if node.get("use_distributed_sampler", False):
        raise UserError("trainer.use_distributed_sampler=true would shard the training data twice under DDP (gan_lab's "
                        "data modules give each process its share of the epoch themselves, so that a mid-epoch "
                        "resume is exact); set trainer.use_distributed_sampler=false.")
    for key, off, instead in (("gradient_clip_val", (None, 0), "; model.gradient_clip_norm clips each net's gradients"),
                              ("accumulate_grad_batches", (None, 1), "")):
        if node.get(key, None) not in off:
            raise UserError(f"trainer.{key}={node.get(key)} belongs to Lightning's automatic optimisation, and a GAN module "
                            f"steps its D and G optimizers itself (manual optimisation), so it cannot apply; remove "
                            f"trainer.{key}{instead}.")
    devices, strategy = node.get("devices"), node.get("strategy")
    several = (isinstance(devices, int) and devices not in (0, 1)) or (isinstance(devices, (list, ListConfig)) and len(devices) > 1)
    if several and strategy in (None, "auto", "ddp", "ddp_spawn"):
        raise UserError(f"trainer.devices={devices} with trainer.strategy={strategy} starts one DDP process per device, "
                        f"and each of a GAN's backward passes uses only G's or only D's parameters, which plain DDP "
                        f"refuses; use trainer=ddp (GPUs) or trainer=ddp_cpu (CPU processes) with trainer.devices={devices}.")
    precision = training_precision(node.get("precision"))
    plugins = precision_plugins(precision, node.get("accelerator"))
    with open_dict(node):
        node.max_time = max_time_text(node.get("max_time"))
        if plugins:  # a mixed precision is gan_lab's plugin, given with the others instead of the flag
            node.pop("precision")
            node.plugins = [*(node.get("plugins") or []), *plugins]
        else:
            node.precision = precision
        if SLURMEnvironment.detect():  # ranks from SLURM; its requeue is gan_lab's (gan_lab.slurm), not Lightning's
            node.plugins = [*(node.get("plugins") or []), {"_target_": f"{SLURMEnvironment.__module__}.SLURMEnvironment",
                                                             "auto_requeue": False}]
    return instantiate_checked(node, "trainer", callbacks=callbacks, logger=loggers or False)


#: the units ``trainer.max_time`` may be given in as a mapping, as Lightning's Timer takes them
TIME_UNITS = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}


def max_time_text(value: Any) -> str | None:
    """``trainer.max_time`` (``"DD:HH:MM:SS"`` or ``{days, hours, minutes, seconds}``) as ``DD:HH:MM:SS``;
    refuses anything else."""
    if value is None:
        return None
    given = OmegaConf.to_container(value) if isinstance(value, DictConfig) else value
    seconds = None
    if isinstance(given, str) and re.fullmatch(r"\d+:\d+:\d+:\d+", given.strip()):
        seconds = sum(int(n) * u for n, u in zip(given.strip().split(":"), TIME_UNITS.values()))
    elif isinstance(given, dict) and given and set(given) <= set(TIME_UNITS) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
            for v in given.values()):
        seconds = int(sum(v * TIME_UNITS[k] for k, v in given.items()))
    if not seconds:
        raise UserError(f"trainer.max_time={given!r} is not a time limit; give DD:HH:MM:SS or days, hours, minutes, "
                        f"seconds >= 0 adding up to at least a second, e.g. trainer.max_time=00:12:00:00 or "
                        f"trainer.max_time={{hours:12}}.")
    return f"{seconds // 86400:02d}:{seconds % 86400 // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
