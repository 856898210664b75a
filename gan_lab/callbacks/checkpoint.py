"""``ModelCheckpoint`` whose state key includes its file name pattern.

Lightning keys a checkpoint callback's state by monitor and frequency only, so two of them with the
same frequency (``last`` every epoch and ``epoch_XXXX`` with ``every_n_epochs=1``) collide and the
Trainer refuses to start. Adding the file name keeps both apart.
"""
from __future__ import annotations

from typing import Any, Literal

from lightning.pytorch.callbacks import ModelCheckpoint

from gan_lab.constraints import Count


class Checkpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint``; 0 as a frequency or as the number kept, which would save nothing
    without a word, is refused (a run drops a checkpoint callback with ``callbacks.<name>=null``).

    Args:
        save_top_k: checkpoints kept (-1: every one).
        every_n_epochs: save every N epochs (null: every epoch, unless ``every_n_train_steps``).
        every_n_train_steps: save every N training steps (null: by epochs).
    """

    def __init__(self, *args: Any, save_top_k: Literal[-1] | Count = 1, every_n_epochs: Count | None = None,
                 every_n_train_steps: Count | None = None, **kwargs: Any) -> None:
        super().__init__(*args, save_top_k=save_top_k, every_n_epochs=every_n_epochs,
                         every_n_train_steps=every_n_train_steps, **kwargs)

    @property
    def state_key(self) -> str:
        return f"{super().state_key}[filename={self.filename!r}]"
