"""The base GAN LightningModule: per batch, ``n_critic`` discriminator then ``n_gen`` generator updates.

Variants override its phase, conditioning and schedule hooks; ``batches_seen`` and ``images_seen`` count progress."""
from __future__ import annotations

import copy
import logging
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Hashable, Iterator, Mapping, Sequence

import lightning as L
import torch
import torch.nn as nn
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import Tensor

from gan_lab.compat import attached_trainer, run_eagerly, spectrally_normalised
from gan_lab.constraints import Count, Positive
from gan_lab.distributed import reduce_over_processes
from gan_lab.errors import UserError
from gan_lab.losses import GANLoss
from gan_lab.models.checkpoint_state import check_nets, match_generator_ema
from gan_lab.noise import Noise
from gan_lab.precision import PhaseMixedPrecision

log = logging.getLogger("gan_lab")

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Stop gradients into ``module``'s parameters within the block (D during a G update)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@dataclass(frozen=True)
class DiscriminatorPhase:
    """What a batch's generator updates take on from its discriminator updates."""

    updates: int                   # the discriminator updates made
    fake: Tensor | None            # the last one's fakes, still carrying G's graph (None: it saw none)
    fake_labels: Tensor | None     # their labels
    real_d: Tensor                 # the real images as D saw them last (its last draw, augmented, for terms that compare)
    labels: Tensor                 # their labels


class GAN(L.LightningModule):
    """Unconditional GAN trained with any objective of :mod:`gan_lab.losses`.

    Args:
        generator: ``z -> image`` module.
        discriminator: ``image -> logits [N]`` module.
        noise: the latent distribution.
        loss: the adversarial objective.
        optimizer: ``{"discriminator": factory, "generator": factory}``, each ``params -> Optimizer``.
        scheduler: same keys, ``optimizer -> LR scheduler`` stepped once per epoch, or ``None``.
        n_critic, n_gen: discriminator and generator updates per batch.
        num_samples: size of the fixed-noise sample grid.
        d_augment: differentiable augmentation of every image D sees in training, or ``None``.
        gradient_clip_norm: clip each optimizer's gradients to this joint L2 norm (``None``: no clipping).
        fresh_reals: each D update gets its own draw of real images (a batch holds ``n_critic`` draws).
        fresh_fakes: the first G update generates its own images instead of reusing the last D update's.
    """

    #: whether D has K+1 outputs (K classes + "fake") scored against classes (ArtGAN)
    k_plus_one = False
    #: whether G and D take class labels (a conditional variant), so that samples can be asked for by class
    conditional = False

    def __init__(self, generator: nn.Module, discriminator: nn.Module, noise: Noise, loss: GANLoss,
                 optimizer: Mapping[str, OptimizerFactory],
                 scheduler: Mapping[str, SchedulerFactory | None] | None = None,
                 n_critic: Count = 1, n_gen: Count = 1, num_samples: Count = 64,
                 d_augment: nn.Module | None = None, gradient_clip_norm: Positive | None = None,
                 fresh_reals: bool = False, fresh_fakes: bool = False) -> None:
        super().__init__()
        self.automatic_optimization = False
        if loss.takes_classes != self.k_plus_one:
            raise UserError(f"loss={loss.name} does not fit {type(self).__name__}: " + (
                "its discriminator's K+1 outputs train with loss=categorical; drop the loss override."
                if self.k_plus_one else "loss=categorical scores K+1 class outputs, which only model=artgan's "
                "discriminator has; use another loss (e.g. loss=non_saturating) or model=artgan."))
        missing = {"discriminator", "generator"} - set(optimizer)
        if missing:
            raise UserError(f"optimizer is missing {sorted(missing)}; an optimizer config needs both "
                            f"'discriminator' and 'generator' entries (see conf/optimizer/adam.yaml).")
        self.generator, self.discriminator = generator, discriminator
        self.noise, self.loss = noise, loss
        self.optimizer_factories = dict(optimizer)
        self.scheduler_factories = dict(scheduler or {})
        self.n_critic, self.n_gen = int(n_critic), int(n_gen)
        self.num_samples = int(num_samples)
        self.gradient_clip_norm = None if gradient_clip_norm is None else float(gradient_clip_norm)
        self.fresh_reals, self.fresh_fakes = fresh_reals, fresh_fakes
        # the sample grid's latents and labels: drawn once and saved in checkpoints (a resume keeps the grid)
        self.register_buffer("fixed_noise", noise.sample(self.num_samples, "cpu"))
        self.register_buffer("fixed_labels", self.grid_labels(self.num_samples))
        self.d_augment = d_augment
        self._real_outputs: Tensor | None = None  # D's raw outputs on the last real batch (for ADA)
        self.batches_seen = 0
        self.images_seen = 0
        #: the ``train/*`` values of the last logging step, on the host (see :meth:`log_terms`)
        self.logged: dict[str, float] = {}
        #: the EMA of G that draws the samples (attached by ``callbacks.ema`` or a checkpoint), or ``None``
        self.generator_ema: nn.Module | None = None
        self._epoch_end_requested = False
        #: the batch replayed as one CUDA graph (``callbacks.fast_path.cuda_graph``); ``None``: eager
        self.captured_step: Any = None

    # --- conditioning hooks (a conditional variant overrides these three) ----------------

    def generate(self, z: Tensor, labels: Tensor) -> Tensor:
        """Images from latents (labels ignored by unconditional models)."""
        return self.generator(z)

    def discriminate(self, images: Tensor, labels: Tensor) -> Tensor:
        """Discriminator logits for images (labels ignored by unconditional models)."""
        return self.discriminator(images)

    def d_scores(self, images: Tensor, labels: Tensor) -> Tensor:
        """D's per-image verdict ``[N]`` on images in [-1, 1]: the probability of being real for a BCE
        objective, the raw critic value otherwise."""
        logits = self.discriminate(self.to_model_range(images), labels).float().reshape(images.shape[0])
        return torch.sigmoid(logits) if self.loss.probability else logits

    # --- pixel range: the data is served in [-1, 1]; a sigmoid generator works in [0, 1] ------

    @property
    def unit_range(self) -> bool:
        """Whether the nets work in [0, 1] (a ``sigmoid`` generator) rather than the data's [-1, 1]."""
        return getattr(self.generator, "output", "tanh") == "sigmoid"

    def to_model_range(self, images: Tensor) -> Tensor:
        """Images in the data range [-1, 1] -> the range the nets work in."""
        return (images + 1) * 0.5 if self.unit_range else images

    def to_data_range(self, images: Tensor) -> Tensor:
        """Images in the nets' range -> the data range [-1, 1]."""
        return images * 2 - 1 if self.unit_range else images

    def sample_labels(self, n: int) -> Tensor:
        """Labels for generated images during training (zeros when unconditional)."""
        return torch.zeros(n, dtype=torch.long, device=self.device)

    def grid_labels(self, n: int) -> Tensor:
        """Labels of the fixed sample grid (zeros when unconditional)."""
        return torch.zeros(n, dtype=torch.long)

    @property
    def grid_nrow(self) -> int:
        """Images per row of the sample grid."""
        return max(1, round(self.num_samples ** 0.5))

    @property
    def grid_row_names(self) -> list[str] | None:
        """A label per grid row (class names for conditional models), or ``None``."""
        return None

    # --- phases (a variant overrides these) ---------------------------------------------

    def d_step(self, real: Tensor, labels: Tensor, fake: Tensor, fake_labels: Tensor) -> dict[str, Tensor]:
        """Discriminator objective on a real batch and a detached fake batch; must return ``d_loss``."""
        real_logits = self.discriminate(real, labels)
        fake_logits = self.discriminate(fake, fake_labels)
        self.record_real_outputs(real_logits)
        return self.d_terms(real, labels, fake, real_logits, fake_logits)

    def d_terms(self, real: Tensor, labels: Tensor, fake: Tensor, real_logits: Tensor, fake_logits: Tensor
                ) -> dict[str, Tensor]:
        """The discriminator's loss terms from its real and fake outputs: ``d_loss`` and the mean verdicts."""
        return {"d_loss": self.loss.discriminator(real_logits, fake_logits),
                "d_real": self.loss.score(real_logits),
                "d_fake": self.loss.score(fake_logits)}

    def g_step(self, fake: Tensor, fake_labels: Tensor, real: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Generator objective on a fake batch that carries G's graph; must return ``g_loss``."""
        return {"g_loss": self.loss.generator(self.discriminate(fake, fake_labels))}

    # --- the schedule of updates (a variant overrides these; the loop below stays the only loop) --

    def d_updates(self) -> int:
        """Discriminator updates in this batch (``n_critic``)."""
        return self.n_critic

    @property
    def draws_per_batch(self) -> int:
        """Draws of ``data.batch_size`` real images per batch: ``n_critic`` with ``fresh_reals``, else 1."""
        return self.n_critic if self.fresh_reals else 1

    def real_draws(self, real: Tensor, labels: Tensor) -> list[tuple[Tensor, Tensor]]:
        """A batch's draws of real images and their labels, in order (views)."""
        return list(zip(real.tensor_split(self.draws_per_batch), labels.tensor_split(self.draws_per_batch)))

    def d_sees_fakes(self) -> bool:
        """Whether this batch's D updates see generated images (``False``: ``d_step`` gets ``fake=None``)."""
        return True

    def decide_g_updates(self, d_terms: Mapping[str, Tensor]) -> int:
        """Generator updates in this batch (``n_gen``), decided once per batch from the D updates'
        terms; at least ``n_gen`` on a :meth:`steady_batch`."""
        return self.n_gen

    def may_add_g_updates(self) -> bool:
        """Whether :meth:`decide_g_updates` may return more than ``n_gen``."""
        return False

    # --- the loop -----------------------------------------------------------------------

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        real, labels = batch
        real = self.to_model_range(real)
        n = real.shape[0]
        captured = self.captured_step
        if captured is not None and self.steady_batch() and captured.accepts(real, labels):
            terms = captured(real, labels)  # the same updates, replayed as one CUDA graph
        else:
            opt_d, opt_g = self.optimizers()
            terms = self.updates(real, labels, opt_d, opt_g, self.manual_backward)
        self.adapt_augmentation(n)
        self.batches_seen += 1
        self.images_seen += n * self.world_size
        self.log_terms(terms)
        return {k: v.detach() for k, v in terms.items()}

    def updates(self, real: Tensor, labels: Tensor, opt_d, opt_g, backward: Callable[[Tensor], Any]) -> dict[str, Tensor]:
        """One batch's D and G updates on real images in the nets' range; returns the loss terms, on the
        device. ``backward``: ``manual_backward``, or ``Tensor.backward`` in a captured step."""
        terms, d_phase = self.discriminator_updates(real, labels, opt_d, backward)
        terms.update(self.generator_updates(d_phase, 0, self.decide_g_updates(terms), opt_g, backward))
        return terms

    def discriminator_updates(self, real: Tensor, labels: Tensor, opt_d, backward: Callable[[Tensor], Any]
                              ) -> tuple[dict[str, Tensor], DiscriminatorPhase]:
        """The batch's D updates: their loss terms and the :class:`DiscriminatorPhase`."""
        terms: dict[str, Tensor] = {}
        fake = fake_labels = None
        draws = self.real_draws(real, labels)  # with fresh_reals, one per update
        n_d, with_fakes = self.d_updates(), self.d_sees_fakes()
        for i in range(n_d):
            draw, draw_labels = draws[i % len(draws)]
            n = draw.shape[0]
            if with_fakes:
                z, fake_labels = self.noise.sample(n, self.device), self.sample_labels(n)
                # the last update's fakes keep G's graph: the first G update reuses them (unless fresh_fakes)
                with torch.set_grad_enabled(i == n_d - 1 and not self.fresh_fakes), self.autocast():
                    fake = self.generate(z, fake_labels)
            real_d = self.augment_for_d(draw)
            fake_d = self.augment_for_d(fake.detach()) if with_fakes else None
            terms.update(self.discriminator_update(opt_d, real_d, draw_labels, fake_d, fake_labels, backward))
        return terms, DiscriminatorPhase(n_d, fake, fake_labels, real_d, draw_labels)

    def generator_updates(self, d_phase: DiscriminatorPhase, first: int, stop: int, opt_g, backward: Callable[[Tensor], Any]
                          ) -> dict[str, Tensor]:
        """The batch's G updates ``first`` to ``stop - 1`` (update 0 reuses the last D update's
        fakes unless ``fresh_fakes``); returns the last one's loss terms ({} when none)."""
        terms: dict[str, Tensor] = {}
        fake, fake_labels, n = d_phase.fake, d_phase.fake_labels, d_phase.real_d.shape[0]
        for j in range(first, stop):
            if j > 0 or fake is None or self.fresh_fakes:
                z, fake_labels = self.noise.sample(n, self.device), self.sample_labels(n)
                with self.autocast():
                    fake = self.generate(z, fake_labels)
            terms.update(self.generator_update(opt_g, self.augment_for_d(fake), fake_labels, d_phase.real_d,
                                               d_phase.labels, backward))
        return terms

    # --- capturing the batch as one CUDA graph (callbacks.fast_path.cuda_graph) -------------

    def capture_refusal(self) -> str | None:
        """Why this model's batch cannot be captured as one CUDA graph, in one sentence, or ``None``."""
        return None

    def capture_key(self) -> Hashable:
        """What a captured graph bakes in besides the optimizers' hyper-parameters; a change recaptures.
        ``None``: one graph for the run."""
        return self.d_augment.capture_key() if self.adaptive_augment else None

    def steady_batch(self) -> bool:
        """Whether this batch runs the schedule a captured step holds (``False``: it runs eagerly)."""
        return True

    # --- augmentation of D's inputs -------------------------------------------------------

    def augment_for_d(self, images: Tensor) -> Tensor:
        """An image batch as D sees it in training: through ``d_augment`` (differentiably), or as it is."""
        return images if self.d_augment is None else self.d_augment(images)

    @property
    def adaptive_augment(self) -> bool:
        """Whether ``d_augment`` is adaptive (ADA): it observes D's real outputs and is checkpointed."""
        return getattr(self.d_augment, "adaptive", False)

    def record_real_outputs(self, real_outputs: Tensor) -> None:
        """Keep D's raw outputs on the real batch (positive: "real") as ADA's signal."""
        if self.adaptive_augment:
            self._real_outputs = real_outputs.detach()

    def adapt_augmentation(self, n: int) -> None:
        """Count a batch of ``n`` images per process towards ADA's next ``p`` adjustment."""
        if self.adaptive_augment:
            self.d_augment.batch_done(n * self.world_size)

    def host_terms(self) -> dict[str, float]:
        """Host-side numbers logged as ``train/<name>``: ``ada_p`` and ``ada_rt`` under ADA."""
        return {"ada_p": self.d_augment.p, "ada_rt": self.d_augment.rt} if self.adaptive_augment else {}

    #: outside a Trainer, the precision plugin of a hand-written loop that runs :meth:`updates` (the bench's)
    loop_precision: Any = None

    def autocast(self) -> ContextManager:
        """The mixed-precision context of one update's forward passes and loss (a no-op in full precision);
        backward and optimizer steps run outside it."""
        trainer = attached_trainer(self)
        plugin = self.loop_precision if trainer is None else trainer.strategy.precision_plugin
        return plugin.phase_context() if isinstance(plugin, PhaseMixedPrecision) else nullcontext()

    def discriminator_update(self, opt, real, labels, fake, fake_labels, backward) -> dict[str, Tensor]:
        with self.autocast():
            terms = self.d_step(real, labels, fake, fake_labels)
        opt.zero_grad(set_to_none=True)
        backward(terms["d_loss"])
        self.clip_gradient_norm(opt)
        opt.step()
        self.after_discriminator_step()
        if self._real_outputs is not None:  # ADA observes the signs of D's outputs on the real batch
            sum_over_ranks = None if self.world_size == 1 else lambda stats: self.over_ranks(stats, "sum")
            self.d_augment.observe(self._real_outputs, sum_over_ranks)
            self._real_outputs = None
        return terms

    def after_discriminator_step(self) -> None:
        """Hook after every D optimizer step (e.g. WGAN's weight clipping); a no-op here."""

    def generator_update(self, opt, fake, fake_labels, real, labels, backward) -> dict[str, Tensor]:
        with frozen(self.discriminator):
            with self.autocast():
                terms = self.g_step(fake, fake_labels, real, labels)
            opt.zero_grad(set_to_none=True)
            backward(terms["g_loss"])
        self.clip_gradient_norm(opt)
        opt.step()
        return terms

    def clip_gradient_norm(self, opt) -> None:
        """Clip a raw torch optimizer's gradients (a captured step's) as :meth:`on_before_optimizer_step`
        clips Lightning's optimizers."""
        if isinstance(opt, torch.optim.Optimizer) and not isinstance(opt, LightningOptimizer):
            self.on_before_optimizer_step(opt)

    def on_before_optimizer_step(self, optimizer) -> None:
        """Clip the unscaled gradients to their joint L2 norm ``gradient_clip_norm`` (if set) before the step."""
        if self.gradient_clip_norm is not None:
            params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.gradient_clip_norm)

    def is_logging_step(self) -> bool:
        """Whether this batch logs: every ``log_every_n_steps`` batches (never when 0)."""
        every = self.trainer.log_every_n_steps
        return every > 0 and self.batches_seen % every == 0

    def log_terms(self, terms: Mapping[str, Tensor]) -> None:
        """On logging steps, average the terms over DDP ranks, keep them in :attr:`logged` and write them
        to the loggers as ``train/<term>`` at ``step = batches_seen``."""
        if not self.is_logging_step():
            return
        names = list(terms)
        # one collective for all terms (Lightning's sync_dist would make one per logged value)
        values = self.over_ranks(torch.stack([terms[k].detach().float().reshape(()) for k in names]))
        host = values.cpu()  # the one host synchronisation of a logging step
        self.logged = {f"train/{k}": v for k, v in zip(names, host.tolist())}
        self.logged.update({f"train/{k}": float(v) for k, v in self.host_terms().items()})
        self.logged.update({"train/batches_seen": float(self.batches_seen), "train/images_seen": float(self.images_seen)})
        for logger in self.loggers:
            logger.log_metrics(self.logged, step=self.batches_seen)
            logger.save()  # as Lightning does after each write: a crash loses nothing logged
        if self.trainer.progress_bar_callback is None:
            return  # nothing shows them (trainer.enable_progress_bar=false): no millisecond in Lightning's log
        # g_loss is absent from batches without a generator update (e.g. discriminator pre-training)
        shown = {k: host[names.index(k)] for k in ("d_loss", "g_loss") if k in names}
        self.log_dict(shown, prog_bar=True, logger=False, on_step=True, on_epoch=False)

    @property
    def world_size(self) -> int:
        """The processes that train together (1 outside a Trainer)."""
        trainer = attached_trainer(self)
        return 1 if trainer is None else trainer.world_size

    def over_ranks(self, values: Tensor, op: str = "mean") -> Tensor:
        """``values`` reduced in place over the DDP ranks in one collective (``op``: ``mean`` or ``sum``)."""
        return reduce_over_processes(values, self.world_size, op)

    def setup(self, stage: str) -> None:
        """Under DDP, reseed each rank from a common seed and its rank (a resume then restores saved RNG states)."""
        if stage == "fit" and self.trainer.world_size > 1:
            common = int(torch.randint(0, 2**31 - 1, (1,)).item())  # identical on every rank
            torch.manual_seed(common + 1_000_003 * self.trainer.global_rank)

    # --- the critic's Lipschitz constraint (what loss=wasserstein needs) ----------------------

    def lipschitz_constraint(self) -> str | None:
        """What keeps D Lipschitz, in words (here: spectral normalisation), or ``None``."""
        return "spectral normalisation" if spectrally_normalised(self.discriminator) else None

    def precision_refusal(self, precision: str, optimizers: Sequence[torch.optim.Optimizer] = ()) -> str | None:
        """Why this model cannot train under ``precision`` with these ``optimizers``, or ``None``;
        here: ``gradient_clip_norm`` under ``16-mixed`` with a fused optimizer."""
        if self.gradient_clip_norm is None or precision != "16-mixed":
            return None
        for name, opt in zip(("discriminator", "generator"), optimizers):
            if any(group.get("fused") for group in opt.param_groups):
                return (f"model.gradient_clip_norm={self.gradient_clip_norm:g} cannot clip under "
                        f"trainer.precision=16-mixed with the {name}'s fused {type(opt).__name__}, which unscales "
                        f"its gradients inside its step; use optimizer.{name}.fused=false or "
                        f"trainer.precision=bf16-mixed.")
        return None

    def on_fit_start(self) -> None:
        refusal = self.precision_refusal(self.trainer.precision, self.trainer.optimizers)
        if refusal is not None:
            raise UserError(refusal)
        served = getattr(self.trainer.datamodule, "draws_per_batch", 1)
        if served != self.draws_per_batch:
            raise UserError(f"model.fresh_reals={str(self.fresh_reals).lower()} needs batches of {self.draws_per_batch} draws of "
                            f"data.batch_size images and the DataModule serves {served}; wire them with "
                            f"gan_lab.build.serve_draws(model, datamodule) before fitting.")
        if self.loss.needs_lipschitz and self.lipschitz_constraint() is None:
            log.warning("loss=wasserstein with nothing keeping D Lipschitz: its outputs can grow without bound and "
                        "the Wasserstein estimate means nothing; use model=wgan (weight clipping), model=wgan_gp "
                        "(gradient penalty) or model.discriminator.spectral_norm=true.")

    # --- ending an epoch early (the way a schedule callback ends one) ----------------------

    def request_epoch_end(self) -> None:
        """End the current epoch at the next batch start, skipping that batch (from a callback's
        ``on_train_batch_start``: the batch about to train)."""
        self._epoch_end_requested = True

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        if self._epoch_end_requested:
            self._epoch_end_requested = False
            return -1
        return None

    def on_train_epoch_end(self) -> None:
        schedulers = self.lr_schedulers() or []
        for sch in schedulers if isinstance(schedulers, list) else [schedulers]:
            sch.step()

    # --- optimisers ---------------------------------------------------------------------

    def configure_optimizers(self):
        keys = ("discriminator", "generator")
        optimizers = [self.optimizer_factories[key](getattr(self, key).parameters()) for key in keys]
        # stepped by on_train_epoch_end; logged by LearningRateLogger
        schedulers = [self.scheduler_factories[key](opt) for key, opt in zip(keys, optimizers)
                      if self.scheduler_factories.get(key) is not None]
        return optimizers, schedulers

    # --- sampling -----------------------------------------------------------------------

    def attach_generator_ema(self) -> nn.Module:
        """Attach ``generator_ema``, a frozen copy of the generator as it is now, unless there is
        one; returns it. Saved in the ``state_dict`` as ``generator_ema.*``."""
        if self.generator_ema is None:
            ema = copy.deepcopy(self.generator).requires_grad_(False)
            # a copy of a generator compiled in place would run the live weights: the copy runs eagerly
            run_eagerly(ema)
            self.generator_ema = ema
        return self.generator_ema

    @torch.no_grad()
    def sample(self, z: Tensor | None = None, labels: Tensor | None = None, n: int | None = None) -> Tensor:
        """Images in [-1, 1] from ``generator_ema`` if attached, else the live generator, run in eval mode;
        ``labels`` default to :meth:`sample_labels` (uniformly drawn classes for a conditional model)."""
        count = z.shape[0] if z is not None else (n or self.num_samples)
        if labels is None:
            labels = self.sample_labels(count)
        if z is None:
            z = self.noise.sample(count, self.device)
        live = self.generator
        net = self.generator_ema if self.generator_ema is not None else live
        was_training = net.training
        net.eval()
        self.generator = net  # ``generate`` (which variants override) runs ``self.generator``
        try:
            images = self.generate(z.to(self.device), labels.to(self.device)).float()
            return self.to_data_range(images).clamp(-1, 1)
        finally:
            self.generator = live
            net.train(was_training)

    def sample_fixed(self) -> Tensor:
        """The fixed-noise grid images (same latents every epoch and after resume)."""
        return self.sample(self.fixed_noise, self.fixed_labels)

    # --- checkpoint state ---------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["gan_lab"] = {"batches_seen": self.batches_seen, "images_seen": self.images_seen}
        if self.adaptive_augment:
            checkpoint["gan_lab"]["d_augment"] = self.d_augment.state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # called before the weights are loaded (by Lightning and by gan_lab.runs.load_run)
        check_nets(self, checkpoint.get("state_dict", {}))
        match_generator_ema(self, checkpoint.get("state_dict", {}))
        state = checkpoint.get("gan_lab", {})
        self.batches_seen = int(state.get("batches_seen", 0))
        self.images_seen = int(state.get("images_seen", 0))
        if self.adaptive_augment and "d_augment" in state:
            self.d_augment.load_state(state["d_augment"])
