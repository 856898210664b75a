"""curves.png: redrawn at the sample grids' cadence during training, a smoothed line over the raw values."""
from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest

from gan_lab.callbacks.curves import smoothed
from gan_lab.errors import UserError
from gan_lab.run import train


def test_smoothing_is_a_debiased_moving_average():
    assert smoothed([3.0, 3.0, 3.0], 0.9) == pytest.approx([3.0, 3.0, 3.0])
    assert smoothed([0.0, 10.0], 0.5) == pytest.approx([0.0, 5.0 / 0.75])
    assert smoothed([1.0, 2.0], 0.0) == [1.0, 2.0]


class Watch(L.Callback):
    """Listed after the curves callback: at each epoch end, the modification time of curves.png (None
    while it does not exist)."""

    seen: list = []

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        Watch.seen = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        Watch.seen.append(self.path.stat().st_mtime_ns if self.path.is_file() else None)


def test_curves_are_redrawn_every_n_epochs_during_training(make_cfg, tmp_path):
    run = tmp_path / "run"
    cfg = make_cfg("trainer.max_epochs=4", "callbacks.sample_grid.every_n_epochs=2", "model.generator.width=4",
                   "model.discriminator.width=4", "+callbacks.watch._target_=tests.test_curves.Watch",
                   f"+callbacks.watch.path={run / 'curves.png'}", run_dir=run)
    assert cfg.callbacks.training_curves.every_n_epochs == 2  # the sample grids' cadence
    train(cfg)
    seen = Watch.seen
    assert seen[0] is None and seen[1] is not None  # drawn after epoch 2, not before
    assert seen[2] == seen[1] and seen[3] != seen[2]
    assert make_cfg("callbacks.sample_grid=null").callbacks.training_curves.every_n_epochs == 1


@pytest.mark.parametrize("override", ["callbacks.training_curves.every_n_epochs=0",
                                      "callbacks.training_curves.smoothing=1.5"])
def test_a_bad_curves_setting_is_one_sentence(make_cfg, override):
    with pytest.raises(UserError, match=override.split("=")[0]):
        train(make_cfg(override))
