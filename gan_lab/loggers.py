"""Logger factories that need a decision before Lightning sees them."""
from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path

log = logging.getLogger(__name__)


def wandb_credentials_present() -> bool:
    """True when W&B has an API key (environment or ~/.netrc); no network access."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc(os.path.expanduser("~/.netrc")).authenticators("api.wandb.ai")
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
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
