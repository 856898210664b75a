"""Mixed precision per phase: autocast around each D or G update's forward passes and loss only.

:class:`PhaseMixedPrecision` keeps backward and optimizer steps out of autocast; :func:`precision_plugins` uses it for
``16-mixed`` and ``bf16-mixed``, and every other precision stays Lightning's."""
from __future__ import annotations

from contextlib import nullcontext

import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from gan_lab.errors import UserError


class PhaseMixedPrecision(MixedPrecision):
    """``MixedPrecision`` whose autocast is opened by the module around each phase's forward passes."""

    #: no autocast around the whole step: backward and optimizer steps run in full precision
    train_step_context = nullcontext

    #: whether autocast caches the weights' casts within a phase (off for a CUDA graph capture, which cannot hold it)
    cache_enabled = True

    def phase_context(self) -> torch.autocast:
        """Autocast for one D or G update's forward passes and loss (weight casts cached within it)."""
        dtype = torch.bfloat16 if self.precision == "bf16-mixed" else torch.float16
        return torch.autocast(self.device, dtype=dtype, cache_enabled=self.cache_enabled)


MIXED = ("16-mixed", "bf16-mixed")
#: the precisions gan_lab trains in: float32 weights, with or without autocast per phase
PRECISIONS = ("32-true", *MIXED)
#: Lightning's short names for them
ALIASES = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed"}
#: what the precisions that store the weights themselves in another dtype store them in
TRUE_DTYPES = {"64": "float64", "64-true": "float64", "16-true": "float16", "bf16-true": "bfloat16"}


def training_precision(precision: str | int | None) -> str:
    """``trainer.precision`` as one of :data:`PRECISIONS` (Lightning's short names mapped to them); a
    :class:`UserError` for any other, e.g. ``bf16-true``."""
    value = "32-true" if precision is None else ALIASES.get(str(precision), str(precision))
    if value in PRECISIONS:
        return value
    if value in TRUE_DTYPES:
        raise UserError(f"trainer.precision={precision} stores the weights themselves in {TRUE_DTYPES[value]}, which "
                        f"gan_lab's models do not train in (their images, noise and losses are float32); use "
                        f"trainer.precision=bf16-mixed (or 16-mixed on a GPU) for autocast, or 32-true.")
    raise UserError(f"trainer.precision={precision} is not one gan_lab trains in; use 32-true, bf16-mixed or "
                    f"16-mixed (a GPU).")


def mixed_precision_device(accelerator: str | None) -> str:
    """The autocast device of ``trainer.accelerator`` (``auto``: a GPU when one is visible)."""
    accelerator = str(accelerator or "auto").lower()
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    if accelerator == "mps" or (accelerator == "auto" and torch.backends.mps.is_available()):
        return "mps"
    return "cpu"


def precision_plugins(precision: str | int | None, accelerator: str | None) -> list[dict[str, str]]:
    """The Trainer ``plugins`` configs for ``trainer.precision``: one :class:`PhaseMixedPrecision` for a
    mixed precision (given instead of the ``precision`` flag), none otherwise; ``16-mixed`` on a CPU is refused."""
    if str(precision) not in MIXED:
        return []
    device = mixed_precision_device(accelerator)
    if precision == "16-mixed" and device == "cpu":
        raise UserError("trainer.precision=16-mixed needs a GPU (float16 autocast is not supported on a CPU); "
                        "use trainer.precision=bf16-mixed on a CPU.")
    return [{"_target_": f"{__name__}.PhaseMixedPrecision", "precision": str(precision), "device": device}]
