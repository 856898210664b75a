"""Atomic checkpoint writes: a crash, a kill or a full disk mid-save never corrupts ``last.ckpt``.

The checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed
over the target with ``os.replace`` (atomic on POSIX and Windows within one file system): readers
see either the previous complete file or the new complete file. Wired in ``conf/trainer/default.yaml``
as a Trainer plugin.
"""
from __future__ import annotations

from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from gan_lab.fs import atomic_torch_save


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with atomic local writes (remote URLs keep Lightning's path)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint takes no storage_options, got "
                            f"{storage_options!r}.")
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, path)
        return None
