"""What a checkpoint's weights must match before a GAN module loads them: this config's nets and its EMA generator."""
from __future__ import annotations

import logging
from typing import Mapping

import lightning as L
from torch import Tensor

from gan_lab.compat import attached_trainer
from gan_lab.errors import UserError

log = logging.getLogger("gan_lab")

#: the prefix of the EMA generator's weights in a ``state_dict``
EMA_PREFIX = "generator_ema."


def ema_keys(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The generator's entries of a ``state_dict`` under the EMA generator's names."""
    return {EMA_PREFIX + k[len("generator."):]: v for k, v in state.items() if k.startswith("generator.")}


def check_nets(module: L.LightningModule, state: Mapping[str, Tensor], source: str | None = None) -> None:
    """Raise a one-sentence :class:`UserError` when ``state`` holds other nets than ``module`` builds (the EMA
    generator aside); ``source`` names the checkpoint (default: the trainer's ``ckpt_path``)."""
    own = dict(module.state_dict())
    if not any(k.startswith(EMA_PREFIX) for k in state):
        own = {k: v for k, v in own.items() if not k.startswith(EMA_PREFIX)}
    elif module.generator_ema is None:
        own.update(ema_keys(own))
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    resized = [(k, list(state[k].shape), list(own[k].shape)) for k in own
               if k in state and hasattr(state[k], "shape") and state[k].shape != own[k].shape]
    resized.sort(key=lambda r: r[0].startswith("fixed_"))  # a net's weight names the difference best
    if not (missing or unexpected or resized):
        return
    parts = []
    if resized:
        key, theirs, ours = resized[0]
        more = f", and {len(resized) - 1} more of other shapes" if len(resized) > 1 else ""
        parts.append(f"{key} is {theirs} there and {ours} here{more}")
    if missing:
        parts.append(f"{len(missing)} weights of this model are not in it (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} of its weights are not in this model (e.g. {unexpected[0]})")
    trainer = attached_trainer(module)
    if source is None:
        source = f"ckpt_path={trainer.ckpt_path}" if trainer is not None and trainer.ckpt_path else "the checkpoint"
    raise UserError(f"{source} holds other nets than this config builds ({'; '.join(parts)}); use it with "
                    f"the config of the run that wrote it (its model and data overrides, .hydra/overrides.yaml).")


def match_generator_ema(module: L.LightningModule, state: dict[str, Tensor]) -> None:
    """Reconcile ``state`` (edited in place) with the module's EMA generator: attach the checkpoint's EMA outside
    training, drop it with a warning in a run without the EMA callback, or start a missing one from the generator."""
    theirs = [k for k in state if k.startswith(EMA_PREFIX)]
    if theirs and module.generator_ema is None:
        if attached_trainer(module) is None:
            module.attach_generator_ema()
        else:
            log.warning("the checkpoint holds an EMA of the generator but callbacks.ema is off in this run: "
                        "the EMA is not carried on and samples come from the live generator.")
            for key in theirs:
                del state[key]
    elif not theirs and module.generator_ema is not None:
        ema = ema_keys(state)
        if ema:
            log.info("the checkpoint has no EMA of the generator: it starts from the generator's weights.")
            state.update({k: v.clone() for k, v in ema.items()})
