"""Rebuild a trained run from its directory for ``evaluate`` and ``generate``: config, DataModule, model, weights."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from gan_lab.build import build_datamodule, build_model, setup_datamodule
from gan_lab.callbacks.resume import epochs_completed
from gan_lab.checkpoint_io import read_checkpoint
from gan_lab.errors import UserError, yaml_problem
from gan_lab.fs import write_problem
from gan_lab.models.checkpoint_state import check_nets

#: the sections of a run's config that ``evaluate`` and ``generate`` rebuild the run from
RUN_SECTIONS = ("model", "data")


@dataclass
class LoadedRun:
    cfg: DictConfig
    datamodule: object
    model: torch.nn.Module
    checkpoint: Path
    #: epochs completed when the checkpoint was written (``metrics.json`` records this number)
    epoch: int
    step: int
    #: batches trained into the next epoch, for a mid-epoch checkpoint (``None`` at an epoch end)
    batch_in_epoch: int | None = None


def pick_device(device: str | None) -> torch.device:
    """``auto`` (or ``None``): the GPU when there is one, else the CPU; ``cpu``, ``cuda`` or
    ``cuda:<index>`` of a GPU this machine has."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind, colon, index = str(device).partition(":")
    if kind not in ("cpu", "cuda") or (colon and (kind != "cuda" or not index.isdigit())):
        raise UserError(f"device={device} is not a device gan_lab can use; use device=auto, device=cpu or "
                        f"device=cuda (device=cuda:1 for a second GPU).")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={device} but no CUDA GPU is available; use device=cpu or device=auto.")
    if kind == "cuda" and colon and int(index) >= torch.cuda.device_count():
        raise UserError(f"device={device} but this machine has {torch.cuda.device_count()} CUDA GPU(s); "
                        f"use device=cuda:0 or device=auto.")
    return torch.device(str(device))


def required_run_dir(cfg: DictConfig) -> Path:
    """``cfg.run_dir`` of an entry point's config, which the user must give."""
    if OmegaConf.is_missing(cfg, "run_dir") or cfg.run_dir is None:
        raise UserError("run_dir is not set; pass run_dir=<a run directory of python -m gan_lab.run>.")
    return Path(cfg.run_dir)


class RunDirCheck(Callback):
    """Hydra callback of ``evaluate`` and ``generate``: refuses a missing or bad ``run_dir`` before Hydra makes
    its output folder."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        try:
            required_run_dir(config)
            run_config(config.run_dir)  # also a damaged config is one line, before any folder is made
        except UserError as exc:
            print(f"gan_lab: error: {exc}", file=sys.stderr)
            sys.exit(2)
        if write_problem(config.hydra.run.dir) is not None:
            keep_hydra_out_of(config)


def keep_hydra_out_of(config: DictConfig) -> None:
    """Make the run directory Hydra's job folder and drop Hydra's log file, for a job folder that cannot be
    made (e.g. read-only storage)."""
    with read_write(config), open_dict(config):
        config.hydra.run.dir = str(Path(config.run_dir).absolute())
        logging = config.hydra.job_logging
        handlers = logging.get("handlers") or {}
        files = [name for name, h in handlers.items() if OmegaConf.is_dict(h) and "filename" in h.keys()]
        for name in files:
            del handlers[name]
        for node in [logging.get("root") or {}, *(logging.get("loggers") or {}).values()]:
            if node and node.get("handlers"):
                node.handlers = [h for h in node.handlers if h not in files]


def damaged_config(run_dir: str | Path, reason: str) -> UserError:
    return UserError(f"run_dir={run_dir} is damaged: its .hydra/config.yaml {reason}; restore that file from a "
                     f"copy of the run (Hydra writes it when training starts), or pass another run_dir.")


def run_config(run_dir: str | Path) -> DictConfig:
    """The training config of a run, with ``run_dir`` set to where the run now lies; a damaged file
    (not YAML, or without ``model`` and ``data``) raises :class:`UserError`."""
    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.is_file():  # not a run directory of gan_lab.run
        absent = "" if Path(run_dir).is_dir() else " (there is no such folder)"
        raise UserError(f"run_dir={run_dir} has no .hydra/config.yaml{absent}; pass the directory a training "
                        f"run printed (`gan_lab: run directory ...`).")
    try:
        cfg = OmegaConf.load(path)
    except UnicodeDecodeError:
        raise damaged_config(run_dir, "is not text") from None
    except (yaml.YAMLError, OmegaConfBaseException, ValueError) as exc:
        raise damaged_config(run_dir, f"is not valid YAML ({yaml_problem(exc)})") from None
    except OSError as exc:
        raise damaged_config(run_dir, f"cannot be read ({exc.strerror or exc})") from None
    if not isinstance(cfg, DictConfig):
        raise damaged_config(run_dir, f"holds a YAML {type(cfg).__name__.replace('Config', '').lower()}, not a config")
    if len(cfg) == 0:
        raise damaged_config(run_dir, "is empty")
    missing = [key for key in RUN_SECTIONS
               if not OmegaConf.is_dict(OmegaConf.select(cfg, key, throw_on_missing=False))]
    if missing:
        raise damaged_config(run_dir, f"has no {' or '.join(missing)} section")
    with open_dict(cfg):  # the Hydra resolvers of these keys only work inside a Hydra job
        cfg.run_dir = str(Path(run_dir))
        cfg.run_name = Path(run_dir).name
    return cfg


def load_run(run_dir: str | Path, ckpt: str | Path | None = None, device: str | None = "auto") -> LoadedRun:
    """Config, DataModule and model of ``run_dir`` with the weights of ``ckpt`` (a path, or a file name
    in ``<run_dir>/checkpoints``; ``last.ckpt`` by default), in eval mode on ``device``."""
    device = pick_device(device)
    cfg = run_config(run_dir)
    ckpt_path = Path(ckpt) if ckpt else Path(run_dir) / "checkpoints" / "last.ckpt"
    if ckpt and not ckpt_path.exists() and (Path(run_dir) / "checkpoints" / ckpt_path).is_file():
        ckpt_path = Path(run_dir) / "checkpoints" / ckpt_path  # ckpt=epoch_0009.ckpt names one of the run's
    if not ckpt_path.exists():
        raise UserError(f"checkpoint {ckpt_path} does not exist; pass ckpt=<path to a .ckpt file> "
                        f"(the run's are in {Path(run_dir) / 'checkpoints'}).")
    state = read_checkpoint(ckpt_path, what="ckpt")  # CRCs checked: a damaged file (or a folder) is one sentence
    datamodule = build_datamodule(cfg, setup=False)
    model = build_model(cfg)  # the nets check their sizes before any image is decoded
    check_nets(model, state["state_dict"], source=f"ckpt={ckpt_path}")  # the nets this config builds?
    model.on_load_checkpoint(state)  # before the weights, as Lightning does
    model.load_state_dict(state["state_dict"])
    setup_datamodule(cfg, datamodule)
    model.to(device).eval()
    epochs, batch_in_epoch = epochs_completed(state)
    return LoadedRun(cfg, datamodule, model, ckpt_path, epochs, int(state.get("global_step", 0)), batch_in_epoch)
