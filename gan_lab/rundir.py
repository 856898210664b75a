"""An existing run directory stays as it was until a new run in it is accepted.

Hydra rewrites ``<run>/.hydra/`` (with the new command) and appends to the job's log before the task
function runs, so a refused resume into the run's own directory (``hydra.run.dir=<run>
ckpt_path=<run>/checkpoints/last.ckpt`` with an incompatible override) would leave the run with the
refused command's config: ``evaluate`` and ``generate`` would rebuild the wrong model, and the
refusal's own advice (".hydra/overrides.yaml") would point at the wrong overrides. The Hydra
callback saves those files first (:meth:`RunDirBackup.take`); :func:`keep_run_dir_until_accepted`
puts them back when the run is refused.

The state lives in this module, not in the entry point's: ``python -m gan_lab.run`` runs the entry
point as ``__main__``, while Hydra imports its callbacks as ``gan_lab.run``.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig

from gan_lab.fs import atomic_write


class RunDirBackup:
    """What Hydra changes in an existing run directory before ``main`` runs: the files of its
    ``.hydra/`` folder (rewritten with the new command) and the job's log (appended to). Saved by
    :class:`~gan_lab.run.OutputDirCheck`, put back by :func:`keep_run_dir_until_accepted` when the run is refused."""

    saved: dict[str, Any] | None = None

    @classmethod
    def take(cls, run_dir: Path, config: DictConfig) -> None:
        cls.saved = None
        if not run_dir.is_dir():
            return  # a new run directory: nothing to keep
        subdir = config.hydra.output_subdir
        folder = run_dir / subdir if subdir is not None else None
        log_file = run_dir / f"{config.hydra.job.name}.log"
        cls.saved = {
            "folder": folder,
            "folder_existed": folder is not None and folder.is_dir(),
            "files": {f: f.read_bytes() for f in folder.iterdir() if f.is_file()} if folder and folder.is_dir() else {},
            "log": log_file,
            "log_size": log_file.stat().st_size if log_file.is_file() else None,
        }

    @classmethod
    def restore(cls) -> None:
        saved, cls.saved = cls.saved, None
        if saved is None:
            return
        folder = saved["folder"]
        if folder is not None and folder.is_dir():
            for f in folder.iterdir():
                if f.is_file() and f not in saved["files"]:
                    f.unlink()  # written by Hydra for the refused run
            if not saved["folder_existed"] and not any(folder.iterdir()):
                folder.rmdir()
        for f, data in saved["files"].items():
            atomic_write(f, lambda fh, data=data: fh.write(data))
        log_file, size = saved["log"], saved["log_size"]
        if size is None:
            log_file.unlink(missing_ok=True)
        elif log_file.is_file() and log_file.stat().st_size > size:
            os.truncate(log_file, size)  # drop the refused run's lines

    @classmethod
    def discard(cls) -> None:
        cls.saved = None


@contextmanager
def keep_run_dir_until_accepted() -> Iterator[None]:
    """Until the block has accepted the run (every check passed), a refusal puts back what Hydra
    changed in an existing run directory; once it has, the new ``.hydra/`` stays (the run's config)."""
    try:
        yield
    except BaseException:
        RunDirBackup.restore()
        raise
    RunDirBackup.discard()
