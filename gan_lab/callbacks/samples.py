"""Sample grids from the fixed noise, every N epochs and after chosen batches: PNGs and the logger."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor
from torchvision.io import read_image

from gan_lab.callbacks.cadence import batches_seen, epoch_due
from gan_lab.constraints import Count, NonNegativeInt
from gan_lab.errors import TrainingInterrupted
from gan_lab.grids import save_grid


class SampleGrid(L.Callback):
    """Writes ``samples/epoch_XXXX.png`` (``batch_XXXXXXX.png`` at chosen batches, ``final.png`` at the end) from
    the module's fixed noise and sends it to the logger (process 0 writes, at step ``batches_seen``).

    Args:
        dirpath: folder of the PNG files (``<run>/samples``).
        every_n_epochs: write a grid every N epochs (and always after the last epoch).
        upscale_to: enlarge images smaller than this side for viewing (0: never).
        at_batches: ``batches_seen`` values after which ``batch_XXXXXXX.png`` is written (1: after the first batch),
            e.g. ``[1, 100, 4000]``.
    """

    def __init__(self, dirpath: str, every_n_epochs: Count = 1, upscale_to: NonNegativeInt = 64,
                 at_batches: Sequence[Count] | Count | None = ()) -> None:
        self.dirpath, self.every_n_epochs, self.upscale_to = Path(dirpath), int(every_n_epochs), upscale_to
        self.at_batches = frozenset(map(int, [at_batches] if isinstance(at_batches, int) else at_batches or ()))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        seen = batches_seen(trainer, pl_module)  # a Python int: no device read
        if seen in self.at_batches:
            self.write(trainer, pl_module, f"batch_{seen:07d}")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if epoch_due(trainer, self.every_n_epochs):
            self.write(trainer, pl_module, f"epoch_{trainer.current_epoch:04d}")

    def on_train_end(self, trainer, pl_module) -> None:
        # max_steps or a limit may end training mid-epoch: always leave the final grid.
        self.write(trainer, pl_module, "final")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        # an interrupted run (signal, trainer.max_time) shows where it stopped, as its checkpoint does
        if isinstance(exception, TrainingInterrupted):
            images = pl_module.sample_fixed()
            if bool(torch.isfinite(images).all()):  # never a grid of non-finite weights
                self._save(trainer, pl_module, images, "final")

    def write(self, trainer, pl_module, tag: str) -> None:
        images = pl_module.sample_fixed()  # every rank runs G (keeps DDP collectives in step)
        self._save(trainer, pl_module, images, tag)

    @rank_zero_only
    def _save(self, trainer, pl_module, images: Tensor, tag: str) -> None:
        path = save_grid(images, self.dirpath / f"{tag}.png", pl_module.grid_nrow,
                         pl_module.grid_row_names, self.upscale_to)
        step = batches_seen(trainer, pl_module)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("samples", [str(path)], step=step, caption=[tag])
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("samples", read_image(str(path)), global_step=step)
