"""Atomic checkpoint writes and CRC-checked reads (a Trainer plugin, see ``conf/trainer/default.yaml``).

A damaged checkpoint or a full disk raises a :class:`UserError` naming the file.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from gan_lab.errors import UserError
from gan_lab.fs import DiskFull, atomic_torch_save, zip_damage


def not_a_file(what: str, path: str | Path) -> UserError:
    """The message for a checkpoint path that names a directory (a run's, or its checkpoints folder)."""
    inside = [Path(path) / "checkpoints" / "last.ckpt", Path(path) / "last.ckpt"]
    found = next((str(p) for p in inside if p.is_file()), "<run>/checkpoints/last.ckpt")
    return UserError(f"{what}={path} is a directory, not a checkpoint file; pass {what}={found}.")


def _damaged(what: str, path: str | Path, reason: str) -> UserError:
    others = sorted(p.name for p in Path(path).parent.glob("*.ckpt") if p.name != Path(path).name)
    hint = f" (others there: {', '.join(others[-3:])})" if others else ""
    return UserError(f"{what}={path} cannot be read as a checkpoint, it is truncated or corrupted ({reason}); "
                     f"use another checkpoint of the run{hint}.")


def read_checkpoint(path: str | Path, what: str = "ckpt_path", weights_only: bool = False,
                    run_checkpoint: bool = True, mmap: bool = False, verify: bool = True) -> dict[str, Any]:
    """A checkpoint's content on the CPU; :class:`UserError` for a damaged file, or with
    ``run_checkpoint`` one without ``state_dict``. ``mmap``: map the tensors instead of reading them;
    ``verify``: check every member's CRC-32 first (:func:`~gan_lab.fs.zip_damage`)."""
    if Path(path).is_dir():
        raise not_a_file(what, path)
    try:
        if verify and (damage := zip_damage(path)) is not None:
            raise _damaged(what, path, damage)
        state = torch.load(path, map_location="cpu", weights_only=weights_only, mmap=mmap)
    except (FileNotFoundError, PermissionError) as exc:
        raise UserError(f"{what}={path} cannot be opened ({exc.strerror}); pass a .ckpt file of a run "
                        f"(<run>/checkpoints/last.ckpt).") from None
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        if isinstance(exc, UserError):
            raise
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        reason = lines[0].rstrip(".") if lines else type(exc).__name__
        raise _damaged(what, path, reason) from None
    if run_checkpoint and (not isinstance(state, dict) or "state_dict" not in state):
        raise UserError(f"{what}={path} is not a checkpoint of a gan_lab run (no 'state_dict' in it); pass "
                        f"<run>/checkpoints/last.ckpt or another .ckpt file of a run.")
    return state


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with atomic local writes (remote URLs keep Lightning's path)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):  # Lightning refuses storage_options itself
            return super().save_checkpoint(checkpoint, path, storage_options)
        try:
            atomic_torch_save(checkpoint, path)
        except DiskFull as exc:  # said with the path, what is intact, and the ckpt_path to continue from
            path = Path(path)
            last = next((p for p in (path, path.parent / "last.ckpt") if p.is_file()), None)
            kept = f", and the previous {path.name} is intact" if path.is_file() else ""
            then = f"continue with ckpt_path={last}" if last is not None else "start the run again"
            error = DiskFull(f"the disk holding {path} is full ({exc.strerror or 'no space left'}): the checkpoint "
                             f"could not be written{kept}; free space there, then {then}.")
            error.errno, error.strerror, error.filename = exc.errno, exc.strerror, str(path)
            raise error from None

    def load_checkpoint(self, path, map_location: Callable | None = None, weights_only: bool | None = None
                        ) -> dict[str, Any]:
        if "://" in str(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        # also Lightning's own files; a resume checkpoint's CRCs were checked by the entry point
        return read_checkpoint(path, weights_only=bool(weights_only), run_checkpoint=False, verify=False)
