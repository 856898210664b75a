"""Memory format and ``torch.compile`` for the nets, as configuration (``callbacks.fast_path``).

Both settings only change how the same computation runs, never what it computes, so they live in
a callback that works for every GAN variant instead of as flags of the models:

- ``channels_last``: the module's 4-D parameters and buffers are stored NHWC. Convolutions follow
  the weights' layout, so the image batches are converted by the first convolution that sees
  them; on a GPU with bf16/fp16 autocast this uses the tensor-core friendly cuDNN kernels.
- ``compile``: ``torch.compile`` of the ``generator`` and ``discriminator`` modules in place
  (``nn.Module.compile``), so parameter names, checkpoints and ``state_dict`` keys stay the same
  as without compilation. ``reduce-overhead`` adds CUDA graphs (GPU only: on CPU it falls back to
  ``default``).

Both are applied in ``setup``, before Lightning moves the module to its device and wraps it for
DDP, and are harmless on CPU.
"""
from __future__ import annotations

import lightning as L
import torch
import torch.nn as nn

from gan_lab.errors import UserError

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: the nets a GAN module exposes (DESIGN.md: every variant has a generator and a discriminator)
NETS = ("generator", "discriminator")


def compile_mode(value: str | bool | None) -> str | None:
    """``false``/``null`` -> no compilation, ``true`` -> ``default``, else one of :data:`COMPILE_MODES`."""
    if value is None or value is False or value in ("false", "none", "off"):
        return None
    if value is True or value in ("true", "on"):
        return "default"
    if value not in COMPILE_MODES:
        raise UserError(f"compile={value!r} is unknown; use false or one of {', '.join(COMPILE_MODES)} "
                        f"(e.g. callbacks.fast_path.compile=default).")
    return str(value)


def use_channels_last(module: nn.Module) -> nn.Module:
    """Store every 4-D parameter and buffer of ``module`` NHWC (in place; returns ``module``)."""
    return module.to(memory_format=torch.channels_last)


def compile_nets(module: nn.Module, mode: str | None, device_type: str) -> list[str]:
    """Compile the named nets of ``module`` in place; returns the names compiled."""
    if mode is None:
        return []
    if mode == "reduce-overhead" and device_type != "cuda":
        mode = "default"  # CUDA graphs need a GPU
    compiled = []
    for name in NETS:
        net = getattr(module, name, None)
        if isinstance(net, nn.Module):
            net.compile(mode=None if mode == "default" else mode)
            compiled.append(name)
    return compiled


class FastPath(L.Callback):
    """Applies ``channels_last`` and ``torch.compile`` to the GAN module when training starts.

    Args:
        channels_last: store the nets NHWC (worth it on GPUs with mixed precision).
        compile: ``false``, ``true``/``default``, ``reduce-overhead`` (CUDA graphs),
            ``max-autotune``, ``max-autotune-no-cudagraphs``.
    """

    def __init__(self, channels_last: bool = False, compile: str | bool | None = False) -> None:
        self.channels_last = bool(channels_last)
        self.compile = compile_mode(compile)
        self.compiled: list[str] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if self.channels_last:
            use_channels_last(pl_module)
        if self.compile is not None and not self.compiled:
            self.compiled = compile_nets(pl_module, self.compile, trainer.strategy.root_device.type)
