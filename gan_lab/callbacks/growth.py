"""The progressive growing schedule as a callback (``callbacks.growth``, brought by ``model=pggan``)."""
from __future__ import annotations

import logging
from typing import Any

import lightning as L

from gan_lab.callbacks.resume import written_mid_epoch
from gan_lab.compat import reload_dataloaders_every_epoch
from gan_lab.errors import UserError
from gan_lab.models.growth import GrowthSchedule, Phase

log = logging.getLogger("gan_lab")


class Growth(L.Callback):
    """Drives a growing model's phase (resolution, alpha, batch size) from ``pl_module.images_seen``, at the start
    of training and after every batch, via ``pl_module.set_phase`` and the DataModule's ``set_resolution``. A stage
    with another batch size ends the epoch (that batch unused) and the next epoch's DataLoader takes it; a mid-epoch
    resume keeps the DataLoader batch size it saved.

    Args:
        schedule: the growth schedule (its target resolution must be the model's ``max_resolution``).
        reset_optimizers_on_growth: clear the optimisers' state when a new resolution starts to fade in.
    """

    def __init__(self, schedule: GrowthSchedule, reset_optimizers_on_growth: bool = True) -> None:
        self.schedule = schedule
        self.reset_optimizers_on_growth = bool(reset_optimizers_on_growth)
        self.phase: Phase = schedule.phase(0)
        self._data_batch_size: int | None = None    # data.batch_size, for stages with batch_size null
        self._loader_batch_size: int | None = None  # batch size of the DataLoader in use
        self._resumed_loader_batch_size: int | None = None  # that of a mid-epoch checkpoint being resumed
        self._checkpoint_mid_epoch = False  # whether the checkpoint being resumed was written inside an epoch

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not callable(getattr(pl_module, "set_phase", None)):
            raise UserError(f"callbacks.growth grows a progressive model, but {type(pl_module).__name__} has no "
                            f"set_phase(resolution, alpha); use model=pggan or set callbacks.growth=null.")
        size = getattr(pl_module, "max_resolution", None)
        if size != self.schedule.target_resolution:
            raise UserError(f"the model grows to {size} but callbacks.growth.schedule's target resolution is "
                            f"{self.schedule.target_resolution}; set both from data.image_size.")

    def batch_size(self) -> int | None:
        """The batch size the current stage wants (``None``: whatever the DataModule has)."""
        return self.phase.batch_size if self.phase.batch_size is not None else self._data_batch_size

    def update(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Phase:
        """Phase for the module's ``images_seen``, given to the module and the DataModule."""
        self.phase = self.schedule.phase(pl_module.images_seen)
        pl_module.set_phase(self.phase.resolution, self.phase.alpha)
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "set_resolution"):
            datamodule.set_resolution(self.phase.resolution)
        return self.phase

    def state_dict(self) -> dict[str, Any]:
        return {"loader_batch_size": self._loader_batch_size}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # called before load_state_dict, with the whole checkpoint: where in the epoch it was written
        self._checkpoint_mid_epoch = written_mid_epoch(checkpoint)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resumed_loader_batch_size = state_dict.get("loader_batch_size") if self._checkpoint_mid_epoch else None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after a checkpoint restored images_seen (and the model's saved phase), before the DataLoader is built
        saved = pl_module.phase
        self._data_batch_size = getattr(getattr(trainer, "datamodule", None), "batch_size", None)
        phase = self.update(trainer, pl_module)
        if trainer.ckpt_path and pl_module.images_seen and saved != (phase.resolution, phase.alpha):
            log.warning("the growth schedule changed since the checkpoint: it was at %dx%d alpha %.3f, the "
                        "current schedule puts %d images at %dx%d alpha %.3f", saved[0], saved[0], saved[1],
                        pl_module.images_seen, phase.resolution, phase.resolution, phase.alpha)
        # a mid-epoch resume continues the epoch with its DataLoader (its first batch ends the epoch if
        # the stage wants another batch size, as in the uninterrupted run); otherwise the stage's size
        self.serve(trainer, self._resumed_loader_batch_size or self.batch_size())
        self._resumed_loader_batch_size = None
        if len(self.schedule.batch_sizes) > 1:
            reload_dataloaders_every_epoch(trainer)
        log.info("progressive growing: %s; starting at %dx%d, alpha %.3f", self.schedule,
                 phase.resolution, phase.resolution, phase.alpha)

    @staticmethod
    def serve(trainer: L.Trainer, batch_size: int | None) -> None:
        """Give the DataModule ``batch_size`` (``None``: keep its own) for the next DataLoader it builds."""
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None and batch_size is not None:
            datamodule.batch_size = batch_size

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The DataLoader in use was built (or kept) for this epoch with the DataModule's batch size of now."""
        self._loader_batch_size = getattr(getattr(trainer, "datamodule", None), "batch_size", None)

    on_train_start = on_train_epoch_start  # on_train_epoch_start does not run for an epoch a resume continues

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the next epoch's DataLoader is built before its first hook: give it the stage's batch size
        # now (a stage reached by the epoch's last batch would otherwise cost an epoch of no batches)
        self.serve(trainer, self.batch_size())

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        wanted = self.batch_size()
        if wanted is not None and self._loader_batch_size is not None and wanted != self._loader_batch_size:
            self.serve(trainer, wanted)
            pl_module.request_epoch_end()  # the next epoch rebuilds the DataLoader with the new batch size

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        stage = self.phase.stage
        phase = self.update(trainer, pl_module)
        if phase.stage != stage:
            log.info("progressive growing: %dx%d fades in after %d images", phase.resolution, phase.resolution,
                     pl_module.images_seen)
            if self.reset_optimizers_on_growth:
                for opt in trainer.optimizers:
                    opt.state.clear()
