"""Loggers that need a decision before Lightning sees them."""
from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger

from gan_lab.compat import AppendingExperimentWriter, appending_experiment
from gan_lab.constraints import Count, NonNegativeInt
from gan_lab.fs import atomic_write

log = logging.getLogger(__name__)


def wandb_credentials_present() -> bool:
    """True when W&B has an API key (environment or ~/.netrc); no network access."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc(os.path.expanduser("~/.netrc")).authenticators("api.wandb.ai")
    except (netrc.NetrcParseError, OSError):
        return False
    return bool(auth and auth[2])


def wandb_logger(project: str = "gan_lab", name: str | None = None, group: str | None = None,
                 save_dir: str = ".", offline: bool | None = None, log_model: bool = False, **kwargs):
    """A ``WandbLogger`` that never prompts: offline when no API key is set (``WANDB_MODE`` wins)."""
    from lightning.pytorch.loggers import WandbLogger

    mode = os.environ.get("WANDB_MODE") or None
    if offline is None:
        offline = mode in ("offline", "dryrun") or (mode != "online" and not wandb_credentials_present())
        if offline and mode is None:
            log.warning("W&B: no API key configured, logging offline to %s/wandb; upload later with "
                        "`wandb sync %s/wandb/offline-run-*`.", save_dir, save_dir)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(project=project, name=name, group=group, save_dir=save_dir, offline=bool(offline),
                       log_model=False if offline else log_model, **kwargs)


def history_rows(path: str | Path) -> int:
    """The complete rows of a ``metrics.csv`` below its header (a last row cut short by a kill is not one)."""
    path = Path(path)
    return max(0, path.read_bytes().count(b"\n") - 1) if path.is_file() else 0


def cut_history(path: str | Path, rows: int) -> int:
    """Keep the header and the first ``rows`` complete rows of a ``metrics.csv`` (atomic replace);
    returns how many rows (complete or cut short) were removed."""
    path = Path(path)
    with open(path, newline="") as file:
        lines = file.read().splitlines(keepends=True)
    keep, removed = lines[:rows + 1], len(lines) - rows - 1
    if removed <= 0:
        if removed < 0:
            log.warning("%s has %d rows, fewer than the %d its checkpoint recorded; it is kept as it is",
                        path, len(lines) - 1, rows)
        return 0
    atomic_write(path, lambda fh: fh.writelines(keep), mode="w")
    return removed


class CSVLogger(LightningCSVLogger):
    """``<run>/metrics.csv``; a run resumed into its own directory appends to the history, not replaces it."""

    def __init__(self, save_dir: str | Path, name: str | None = "lightning_logs",
                 version: NonNegativeInt | str | None = None, prefix: str = "",
                 flush_logs_every_n_steps: Count = 100) -> None:
        super().__init__(save_dir, name=name, version=version, prefix=prefix,
                         flush_logs_every_n_steps=flush_logs_every_n_steps)

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingExperimentWriter:
        return appending_experiment(self)
