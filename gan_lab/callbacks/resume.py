"""Position in the epoch: a resume continues a half-finished epoch where it stopped, and one that could not
continue its checkpoint (other batches, epoch order or optimisers) is refused before training."""
from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch

from gan_lab.compat import silence_mid_epoch_resume_warning, unsilence
from gan_lab.errors import UserError

log = logging.getLogger(__name__)


def epochs_completed(checkpoint: dict[str, Any]) -> tuple[int, int | None]:
    """(epochs completed, batches into the epoch in progress or ``None``) of a checkpoint: an epoch-end one
    completes ``epoch + 1`` epochs, a mid-epoch one is ``batch_in_epoch`` batches into epoch ``epoch`` (0-based)."""
    epoch = int(checkpoint.get("epoch", 0))
    state = (checkpoint.get("callbacks") or {}).get(EpochPosition.__qualname__)
    if isinstance(state, dict) and state.get("mid_epoch"):
        return epoch, int(state.get("batch_in_epoch", 0))
    return epoch + 1, None


def written_mid_epoch(checkpoint: dict[str, Any]) -> bool:
    """Whether ``checkpoint`` was written inside an epoch (see :func:`epochs_completed`)."""
    return epochs_completed(checkpoint)[1] is not None


def ends_epoch(trainer: L.Trainer, batch_idx: int) -> bool:
    """Whether batch ``batch_idx`` is the last of its epoch."""
    return batch_idx + 1 >= trainer.num_training_batches


def order_of(sampler: Any) -> dict[str, int] | None:
    """The sampler's seed and number of images, from which the epochs' order is drawn (``None``: not gan_lab's)."""
    seed, n = getattr(sampler, "seed", None), getattr(sampler, "n", None)
    return None if seed is None or n is None else {"seed": int(seed), "images": int(n)}


def check_epoch_continues(batches: int, saved_images: int | None, images: int | None,
                          saved_order: dict[str, int] | None, order: dict[str, int] | None) -> None:
    """Refuses to continue an epoch cut ``batches`` batches in with batches of another size or another order."""
    if saved_images is not None and images is not None and saved_images != images:
        raise UserError(f"the checkpoint stopped {batches} batches into an epoch whose batches held {saved_images} "
                        f"images, and this run's batches hold {images} (data.batch_size, times model.n_critic with "
                        f"model.fresh_reals), so the rest of that epoch is not what it was; resume with the "
                        f"checkpoint's data.batch_size and model.fresh_reals, or from an epoch-end checkpoint.")
    if saved_order and order and saved_order != order:
        raise UserError(f"the checkpoint stopped {batches} batches into an epoch whose order was drawn with seed "
                        f"{saved_order['seed']} over {saved_order['images']} training images, and this run draws "
                        f"it with seed {order['seed']} over {order['images']} (seed, data.subset or the data "
                        f"changed), so skipping the images served would skip others; resume with the "
                        f"checkpoint's seed and data, or from an epoch-end checkpoint.")


def check_resumed_position(checkpoint: dict[str, Any], datamodule: Any) -> None:
    """Before training, refuses to continue a mid-epoch ``checkpoint`` with other batches or another epoch order
    (:class:`EpochPosition` checks again once the DataLoader exists)."""
    batches, callbacks = epochs_completed(checkpoint)[1], checkpoint.get("callbacks") or {}
    if batches is None or any(str(key).startswith("Growth") for key in callbacks):
        return  # with growth, the batch size is the stage's, known once the Growth callback has restored it
    state = callbacks[EpochPosition.__qualname__]
    # as the DataModule will serve the batches, before a Trainer exists
    sampler = datamodule.train_sampler() if hasattr(datamodule, "train_sampler") else None
    images = getattr(datamodule, "train_batch_size", None)
    check_epoch_continues(batches, state.get("batch_images"), None if images is None else int(images),
                          state.get("order"), order_of(sampler))


# --- optimisers ---------------------------------------------------------------------------------

#: param-group keys that say how an optimiser runs, not which one it is, and those that learning-rate schedulers add
NOT_THE_KIND = frozenset({"params", "foreach", "fused", "capturable", "differentiable", "maximize",
                          "decoupled_weight_decay", "initial_lr", "base_lr", "max_lr", "min_lr",
                          "max_momentum", "base_momentum"})


def optimizer_name(cls: type) -> str:
    """``torch.optim.Adam`` rather than ``torch.optim.adam.Adam`` where torch.optim exports the class."""
    if getattr(torch.optim, cls.__name__, None) is cls:
        return f"torch.optim.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def group_keys(group: dict[str, Any]) -> frozenset[str]:
    return frozenset(group) - NOT_THE_KIND


def optimizers_with_keys(keys: frozenset[str]) -> list[str]:
    """The torch.optim optimisers whose param groups hold ``keys``, the most specific only, sorted by name."""
    found: list[tuple[int, str]] = []
    for name in dir(torch.optim):
        cls = getattr(torch.optim, name)
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)) or cls is torch.optim.Optimizer:
            continue
        try:
            own = group_keys(cls([torch.nn.Parameter(torch.zeros(1))]).param_groups[0])
        except Exception:  # noqa: BLE001 - one that needs arguments is not a candidate
            continue
        if own <= keys:
            found.append((len(own), optimizer_name(cls)))
    best = max((n for n, _ in found), default=0)
    return sorted(name for n, name in found if n == best)


def configured_optimizers(model: L.LightningModule) -> list[torch.optim.Optimizer]:
    """The optimisers ``model.configure_optimizers`` builds, without a Trainer (nothing is stepped)."""
    conf = model.configure_optimizers()
    if isinstance(conf, (torch.optim.Optimizer, dict)):
        conf = [conf]
    elif isinstance(conf, (list, tuple)) and len(conf) == 2 and isinstance(conf[0], (list, tuple)):
        conf = conf[0]
    return [c["optimizer"] if isinstance(c, dict) else c for c in conf or []]


def net_of(optimizer: torch.optim.Optimizer, model: L.LightningModule) -> str:
    """The submodule (``discriminator``, ``generator``) whose parameters ``optimizer`` steps."""
    owner = {id(p): name.split(".")[0] for name, p in model.named_parameters()}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return owner.get(id(params[0]), "model") if params else "model"


def check_resumed_optimizers(checkpoint: dict[str, Any], model: L.LightningModule, source: str) -> None:
    """Before training, refuses a checkpoint whose optimiser states are not of the optimisers this config builds
    (compared by the classes :class:`OptimizerClasses` records, else by their param-group keys)."""
    saved = checkpoint.get("optimizer_states")
    if not saved:
        return
    built = configured_optimizers(model)
    fresh = "or start afresh in a new run directory (hydra.run.dir=<new>) without ckpt_path"
    if len(saved) != len(built):
        raise UserError(f"{source} holds the states of {len(saved)} optimisers and this config builds {len(built)}; "
                        f"resume with the config the run was trained with, {fresh}.")
    classes = checkpoint.get(OptimizerClasses.KEY) or [None] * len(saved)
    for state, optimizer, cls in zip(saved, built, classes):
        now = optimizer_name(type(optimizer))
        groups = state.get("param_groups") or [{}]
        if cls is not None:
            if cls == f"{type(optimizer).__module__}.{type(optimizer).__qualname__}":
                continue
            module, _, name = cls.rpartition(".")
            then = f"torch.optim.{name}" if module.startswith("torch.optim") and hasattr(torch.optim, name) else cls
        else:
            if group_keys(optimizer.param_groups[0]) <= frozenset(groups[0]):  # it holds every key of ours
                continue
            then = " or ".join(optimizers_with_keys(group_keys(groups[0]))[:2]) or "another optimiser"
        net = net_of(optimizer, model)
        raise UserError(f"{source} holds the state of a {then} optimiser for the {net}, and this config builds "
                        f"{now} (optimizer.{net}); resume with the optimizer the run was trained with, {fresh}.")


class OptimizerClasses(L.Callback):
    """Records the class of every optimiser in each checkpoint, for :func:`check_resumed_optimizers`."""

    KEY = "optimizer_classes"

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[self.KEY] = [f"{type(o).__module__}.{type(o).__qualname__}" for o in trainer.optimizers]


def loader_workers(loader: Any) -> int:
    """The worker processes of a DataLoader, or of the DataModule that makes it (0: none)."""
    return int(getattr(loader, "num_workers", 0) or 0)


def redraw_order(trainer: L.Trainer) -> None:
    """Make the training DataLoader's persistent workers draw the current epoch's order again (after a resume set
    the sampler's epoch and skip), without drawing a new seed from torch's generator; refuses non-persistent ones."""
    loader = trainer.train_dataloader
    if loader_workers(loader) == 0:
        return  # the sampler is read at the first batch, after on_train_start
    if not getattr(loader, "persistent_workers", False):
        raise UserError("data.num_workers>0 needs persistent DataLoader workers to resume exactly; "
                        "use data.num_workers=0.")
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(trainer.current_epoch)
    iter(loader)


class EpochPosition(L.Callback):
    """Saves the batches trained in the epoch in progress; a mid-epoch resume makes the sampler skip the samples
    they used (exact with :class:`~gan_lab.callbacks.rng.RngState`) and silences Lightning's "not resumable"
    warning for that fit."""

    def __init__(self) -> None:
        self.batch_in_epoch = 0
        self._trainer: L.Trainer | None = None
        self._resumed: dict[str, Any] | None = None  # the state of a mid-epoch checkpoint being resumed
        self._quiet: Any = None  # the filter silencing Lightning's mid-epoch resume warning, while installed

    def state_dict(self) -> dict[str, Any]:
        trainer = self._trainer
        loader = trainer.train_dataloader if trainer is not None else None
        # mid_epoch: inside an epoch, some of its batches trained, not all
        mid_epoch = trainer is not None and 0 < self.batch_in_epoch < trainer.num_training_batches
        return {"batch_in_epoch": self.batch_in_epoch, "mid_epoch": mid_epoch,
                "batch_images": getattr(loader, "batch_size", None),
                "order": order_of(getattr(loader, "sampler", None))}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # applied in on_train_start, once the DataLoader (and its sampler) exists
        self._resumed = state_dict if state_dict.get("mid_epoch") else None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        resumed, self._resumed = self._resumed, None
        if resumed is None:
            self.batch_in_epoch = 0
            if trainer.current_epoch > 0:  # resumed at an epoch's start
                redraw_order(trainer)
            return
        # a mid-epoch resume: the sampler skips what the interrupted part served
        self.batch_in_epoch = int(resumed["batch_in_epoch"])
        loader = trainer.train_dataloader
        sampler = getattr(loader, "sampler", None)
        check_epoch_continues(self.batch_in_epoch, resumed.get("batch_images"), getattr(loader, "batch_size", None),
                              resumed.get("order"), order_of(sampler))
        if not hasattr(sampler, "skip_next"):
            log.warning("resuming mid-epoch with a sampler that cannot skip served samples (%s): the "
                        "rest of this epoch repeats its first batches.", type(sampler).__name__)
            return
        sampler.skip_next(self.batch_in_epoch * loader.batch_size)
        redraw_order(trainer)
        # exact, so Lightning's "not resumable" warning (before this fit's first batch) is wrong: silenced until then
        self._quiet = silence_mid_epoch_resume_warning()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.batch_in_epoch = 0  # (not called for the epoch a mid-epoch resume continues)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._warn_again()
        # counted as the batch starts: a checkpoint saved at its end, before or after this hook, holds it as trained
        self.batch_in_epoch += 1

    # Lightning ends the epoch at on_train_epoch_end even when max_steps cut it short: checkpoints written from
    # now on (the epoch checkpoint comes after this hook) resume at the next epoch's start.
    on_train_epoch_end = on_train_epoch_start

    def _warn_again(self, *hook_args: Any) -> None:
        """Hear Lightning's mid-epoch resume warning again (at each batch's start and at the end of training)."""
        unsilence(self._quiet)
        self._quiet = None

    on_train_end = on_exception = _warn_again
