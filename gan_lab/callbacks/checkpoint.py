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
        return self._generate_state_key(monitor=self.monitor, mode=self.mode,
                                        every_n_train_steps=self._every_n_train_steps,
                                        every_n_epochs=self._every_n_epochs,
                                        train_time_interval=self._train_time_interval,
                                        filename=self.filename)
