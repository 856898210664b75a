"""Wiring shared by the entry points: config -> DataModule, model, callbacks, loggers, Trainer.

This is the only place that turns config nodes into objects; everything below receives objects
and plain values. ``run``, ``evaluate`` and ``generate`` all build through here so that a run
directory's ``.hydra/config.yaml`` always rebuilds the same model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from gan_lab.errors import UserError, unwrap_user_error

#: facts a DataModule publishes into ``cfg.data`` so that model configs can interpolate them
DATA_FACTS = ("channels", "num_classes", "class_names")


def make(node: DictConfig | None, what: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` with user mistakes turned into one sentence naming the key."""
    if node is None:
        return None
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
        raise


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    """Instantiate and set up the DataModule, then publish its facts into ``cfg.data``."""
    dm = make(cfg.data, "data")
    dm.prepare_data()
    dm.setup("fit")
    with open_dict(cfg):
        for key in DATA_FACTS:
            value = getattr(dm, key)
            cfg.data[key] = list(value) if isinstance(value, (list, tuple)) else value
    return dm


def build_model(cfg: DictConfig) -> L.LightningModule:
    """The GAN LightningModule with its noise, loss, optimisers and schedulers."""
    noise = make(cfg.noise, "noise")
    loss = make(cfg.loss, "loss")
    optimizer = {k: make(v, f"optimizer.{k}") for k, v in cfg.optimizer.items()}
    for key, factory in optimizer.items():
        check_optimizer(factory, f"optimizer.{key}")
    scheduler = {k: make(v, f"scheduler.{k}") for k, v in (cfg.get("scheduler") or {}).items()}
    return make(cfg.model, "model", noise=noise, loss=loss, optimizer=optimizer, scheduler=scheduler)


def check_optimizer(factory, what: str) -> None:
    """Build the optimiser once on a dummy parameter so bad values (negative lr, betas given as
    integers, ...) fail before training with one sentence instead of inside ``fit``."""
    import torch

    try:
        factory([torch.nn.Parameter(torch.zeros(1))])
    except (ValueError, TypeError) as exc:
        raise UserError(f"{what}: {exc}; fix the value, e.g. {what}.lr=2e-4 or "
                        f"{what}.betas=[0.5,0.999] (floats).") from None


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    return [make(node, f"callbacks.{name}") for name, node in (cfg.get("callbacks") or {}).items()
            if node is not None]


def build_loggers(cfg: DictConfig) -> list:
    loggers = []
    for name, node in (cfg.get("logger") or {}).items():
        if node is None:
            continue
        extra = {}
        if name == "wandb" and node.get("group") is None and sweep_name() is not None:
            extra["group"] = sweep_name()  # the runs of one sweep share a W&B group
        loggers.append(make(node, f"logger.{name}", **extra))
    return loggers


def sweep_name() -> str | None:
    """``<run_name>/<date_time>`` of the multirun this job belongs to, or ``None``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    sweep_dir = Path(HydraConfig.get().sweep.dir)
    return f"{sweep_dir.parent.name}/{sweep_dir.name}"


def build_trainer(cfg: DictConfig, callbacks: list, loggers: list) -> L.Trainer:
    return make(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False)


def resolved(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
