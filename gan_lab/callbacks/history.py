"""``metrics.csv`` continues exactly where the checkpoint a run resumes from was written."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L

from gan_lab.loggers import CSVLogger, cut_history, history_rows

log = logging.getLogger(__name__)


class History(L.Callback):
    """Records the history's row count in each checkpoint; a resume into the same run directory cuts it back."""

    @staticmethod
    def _csv(trainer: L.Trainer) -> Path | None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, CSVLogger)]
        return Path(loggers[0].experiment.metrics_file_path).resolve() if loggers else None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        path = self._csv(trainer) if trainer.is_global_zero else None
        if path is None:
            return
        for logger in trainer.loggers:
            logger.save()  # rows still buffered belong to the batches the checkpoint holds
        checkpoint["history"] = {"path": str(path), "rows": history_rows(path)}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("history")
        path = self._csv(trainer) if trainer.is_global_zero else None
        if not saved or path is None or Path(saved["path"]) != path or not path.is_file():
            return  # resumed into another run directory: its history starts here
        dropped = cut_history(path, int(saved["rows"]))
        if dropped:
            log.info("%s: %d rows logged after the checkpoint were removed (the resumed run logs them again)",
                     path, dropped)
