"""``ModelCheckpoint`` whose state key includes its file name pattern (``last`` and ``epoch_XXXX`` do not collide)."""
from __future__ import annotations

from typing import Any, Literal

from lightning.pytorch.callbacks import ModelCheckpoint

from gan_lab.constraints import Count


class Checkpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` refusing 0 as a frequency or number kept (drop it: ``callbacks.<name>=null``)."""

    def __init__(self, *args: Any, save_top_k: Literal[-1] | Count = 1, every_n_epochs: Count | None = None,
                 every_n_train_steps: Count | None = None, **kwargs: Any) -> None:
        super().__init__(*args, save_top_k=save_top_k, every_n_epochs=every_n_epochs,
                         every_n_train_steps=every_n_train_steps, **kwargs)

    @property
    def state_key(self) -> str:
        return f"{super().state_key}[filename={self.filename!r}]"
