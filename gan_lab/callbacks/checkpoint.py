"""``ModelCheckpoint`` whose state key includes its file name pattern.

Lightning keys a checkpoint callback's state by monitor and frequency only, so two of them with the
same frequency (``last`` every epoch and ``epoch_XXXX`` with ``every_n_epochs=1``) collide and the
Trainer refuses to start. Adding the file name keeps both apart.
"""
from __future__ import annotations

from lightning.pytorch.callbacks import ModelCheckpoint


class Checkpoint(ModelCheckpoint):
    @property
    def state_key(self) -> str:
        return f"{super().state_key}[filename={self.filename!r}]"
