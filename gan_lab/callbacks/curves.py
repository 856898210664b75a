"""Training curves: losses and D scores against images seen, plotted to ``curves.png`` as smoothed lines over
faint raw values; the history is saved in checkpoints."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from pydantic import Field

from gan_lab.constraints import Count
from gan_lab.errors import TrainingDiverged, TrainingInterrupted


def smoothed(values: list[float], weight: float) -> list[float]:
    """Exponential moving average of ``values`` with ``weight`` on the past, debiased at the start (as TensorBoard)."""
    out, average = [], 0.0
    for i, value in enumerate(values, 1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight ** i))
    return out


class TrainingCurves(L.Callback):
    """Records every ``train/*`` value the module logs and plots loss / score panels.

    Args:
        path: the PNG (``<run>/curves.png``), redrawn every ``every_n_epochs`` epochs and at the end.
        smoothing: weight on the past of the smoothed line drawn over the raw values (0: raw only).
    """

    #: keys of a growth schedule (Progressive GAN), drawn in their own panel
    GROWTH_KEYS = ("resolution", "alpha")

    def __init__(self, path: str, every_n_epochs: Count = 1,
                 smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.9) -> None:
        self.path, self.every_n_epochs, self.smoothing = Path(path), every_n_epochs, float(smoothing)
        self.history: dict[str, list[tuple[float, float]]] = {}
        self._last_batch = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        is_logging_step = getattr(pl_module, "is_logging_step", None)
        if is_logging_step is None or not is_logging_step() or pl_module.batches_seen == self._last_batch:
            return  # nothing new was logged on this batch
        self._last_batch = pl_module.batches_seen
        x = float(pl_module.images_seen)
        for key, value in getattr(pl_module, "logged", {}).items():  # host values already (the module's logging step)
            if key.startswith("train/") and not key.endswith("_seen"):
                self.history.setdefault(key.removeprefix("train/"), []).append((x, value))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.plot()

    def on_train_end(self, trainer, pl_module) -> None:
        self.plot()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        # an interrupted or diverged run shows its curves up to where it stopped
        if isinstance(exception, (TrainingInterrupted, TrainingDiverged)):
            self.plot()

    def panels(self) -> list[tuple[str, list[str]]]:
        """(title, keys) of each panel: losses and penalties, D's scores, and the growth schedule if any."""
        losses = [k for k in self.history if k.endswith(("loss", "penalty"))]
        growth = [k for k in self.GROWTH_KEYS if k in self.history]
        scores = [k for k in self.history if k not in losses and k not in growth]
        return [(title, keys) for title, keys in (("losses", losses), ("scores", scores), ("growth", growth)) if keys]

    @rank_zero_only
    def plot(self) -> Path | None:
        if not self.history:
            return None
        from matplotlib.figure import Figure

        panels = self.panels()
        fig = Figure(figsize=(6 * len(panels), 4))
        axes = fig.subplots(1, len(panels), squeeze=False)
        for ax, (title, keys) in zip(axes[0], panels):
            if title == "growth":
                self._plot_growth(ax)
            else:
                for key in keys:
                    xs, ys = zip(*self.history[key])
                    if self.smoothing:
                        line, = ax.plot(xs, ys, linewidth=1, alpha=0.25)
                        ax.plot(xs, smoothed(list(ys), self.smoothing), label=key, linewidth=1.5,
                                color=line.get_color())
                    else:
                        ax.plot(xs, ys, label=key, linewidth=1)
                ax.legend()
            ax.set_title(title)
            ax.set_xlabel("images seen")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(self.path, dpi=100)
        return self.path

    def _plot_growth(self, ax) -> None:
        """Progressive growing panel: resolution (log2 axis) and fade-in alpha (right axis)."""
        if "resolution" in self.history:
            xs, ys = zip(*self.history["resolution"])
            ax.step(xs, ys, where="post", color="tab:blue", linewidth=1)
            ax.set_yscale("log", base=2)
            ax.set_ylabel("resolution", color="tab:blue")
        if "alpha" in self.history:
            twin = ax.twinx() if "resolution" in self.history else ax
            xs, ys = zip(*self.history["alpha"])
            twin.plot(xs, ys, color="tab:orange", linewidth=1)
            twin.set_ylim(-0.05, 1.05)
            twin.set_ylabel("alpha", color="tab:orange")

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "last_batch": self._last_batch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {k: [tuple(p) for p in v] for k, v in state_dict.get("history", {}).items()}
        self._last_batch = state_dict.get("last_batch", -1)
