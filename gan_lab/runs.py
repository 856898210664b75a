"""Rebuild a trained run from its directory: config, DataModule, model and checkpoint weights.

``evaluate`` and ``generate`` use this: the run's ``.hydra/config.yaml`` goes through
:mod:`gan_lab.build` exactly as at training time, so the model class, nets and noise are the ones
that were trained.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from gan_lab.build import build_datamodule, build_model
from gan_lab.checkpoint_io import read_checkpoint
from gan_lab.errors import UserError


@dataclass
class LoadedRun:
    cfg: DictConfig
    datamodule: object
    model: torch.nn.Module
    checkpoint: Path
    epoch: int
    step: int


def pick_device(device: str | None) -> torch.device:
    """``auto`` (or ``None``): the GPU when there is one, else the CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={device} but no CUDA GPU is available; use device=cpu or device=auto.")
    return torch.device(device)


def required_run_dir(cfg: DictConfig) -> Path:
    """``cfg.run_dir`` of an entry point's config, which the user must give."""
    if OmegaConf.is_missing(cfg, "run_dir") or cfg.run_dir is None:
        raise UserError("run_dir is not set; pass run_dir=<a run directory of python -m gan_lab.run>.")
    return Path(cfg.run_dir)


def run_config(run_dir: str | Path) -> DictConfig:
    """The training config of a run, with ``run_dir`` pointing at where the run now lies."""
    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.is_file():
        raise UserError(f"run_dir={run_dir} has no .hydra/config.yaml; pass the directory a training run "
                        f"printed (`gan_lab: run directory ...`).")
    cfg = OmegaConf.load(path)
    with open_dict(cfg):  # the Hydra resolvers of these keys only work inside a Hydra job
        cfg.run_dir = str(Path(run_dir))
        cfg.run_name = Path(run_dir).name
    return cfg


def load_run(run_dir: str | Path, ckpt: str | Path | None = None, device: str | None = "auto") -> LoadedRun:
    """Config, DataModule and model of ``run_dir`` with the weights of ``ckpt`` (a path, or a file name
    in ``<run_dir>/checkpoints``; ``last.ckpt`` by default), in eval mode on ``device``."""
    cfg = run_config(run_dir)
    ckpt_path = Path(ckpt) if ckpt else Path(run_dir) / "checkpoints" / "last.ckpt"
    if ckpt and not ckpt_path.is_file() and (Path(run_dir) / "checkpoints" / ckpt_path).is_file():
        ckpt_path = Path(run_dir) / "checkpoints" / ckpt_path  # ckpt=epoch_0009.ckpt names one of the run's
    if not ckpt_path.is_file():
        raise UserError(f"checkpoint {ckpt_path} does not exist; pass ckpt=<path to a .ckpt file> "
                        f"(the run's are in {Path(run_dir) / 'checkpoints'}).")
    datamodule = build_datamodule(cfg)
    model = build_model(cfg)
    state = read_checkpoint(ckpt_path, what="ckpt")
    model.on_load_checkpoint(state)  # before the weights, as Lightning does: checks they fit the model
    model.load_state_dict(state["state_dict"])
    model.to(pick_device(device)).eval()
    return LoadedRun(cfg, datamodule, model, ckpt_path, int(state.get("epoch", 0)), int(state.get("global_step", 0)))
