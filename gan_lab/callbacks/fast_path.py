"""Memory format, ``torch.compile`` and CUDA-graph capture of the training step (``callbacks.fast_path``).
They change how a batch runs, never what it computes."""
from __future__ import annotations

from typing import Any, Callable

import lightning as L
import torch
import torch.nn as nn
from torch import Tensor

from gan_lab.compat import count_optimizer_step
from gan_lab.constraints import Count
from gan_lab.errors import UserError

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: the nets a GAN module exposes (every variant has a generator and a discriminator)
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


def compile_nets(module: nn.Module, mode: str | None, device_type: str) -> list[str]:
    """Compile the named nets of ``module`` in place; returns the names compiled."""
    if mode is None:
        return []
    if mode == "reduce-overhead" and device_type != "cuda":
        mode = "default"  # CUDA graphs need a GPU
    compiled = [name for name in NETS if isinstance(getattr(module, name, None), nn.Module)]
    for name in compiled:
        getattr(module, name).compile(mode=None if mode == "default" else mode)
    return compiled


def compile_refusal(mode: str | None, channels_last: bool, device_type: str) -> str | None:
    """The sentence refusing a ``compile`` x ``channels_last`` pair that fails on ``device_type``."""
    if device_type != "cuda" or mode is None:
        return None
    if mode in ("reduce-overhead", "max-autotune"):
        return (f"callbacks.fast_path.compile={mode} adds CUDA graphs that overwrite G's output between the D and "
                f"the G update of a batch; use callbacks.fast_path.cuda_graph=true (the whole batch as one graph) "
                f"or callbacks.fast_path.compile=default.")
    if mode == "max-autotune-no-cudagraphs" and channels_last:
        return ("callbacks.fast_path.compile=max-autotune-no-cudagraphs with callbacks.fast_path.channels_last=true "
                "fails in inductor (a stride assertion on the last 4x4 convolution); use "
                "callbacks.fast_path.compile=default with channels_last, or channels_last=false.")
    return None


#: optimizers whose step a CUDA graph can hold (``capturable`` ones, and SGD, which keeps no step count)
CAPTURABLE = (torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop, torch.optim.SGD)


class GraphedStep:
    """``fn(*inputs)`` as one CUDA graph on static input buffers: the first ``warmup`` calls run eagerly on a side
    stream, the next captures, later ones replay (``capture=False``: always eager). Returns ``fn``'s output, static
    tensors once captured (read them before the next call). ``follow_up`` (no arguments, :meth:`run_follow_up`) is
    captured as a second graph right after ``fn``."""

    def __init__(self, fn: Callable[..., Any], optimizers: list[torch.optim.Optimizer], warmup: int,
                 capture: bool = True, follow_up: Callable[[], Any] | None = None) -> None:
        self.fn, self.optimizers, self.warmup, self.capture = fn, optimizers, int(warmup), bool(capture)
        self.follow_up = follow_up
        self.restart()  # no buffers (inputs), outputs or graphs yet, no calls
        self.follow_ups = self.captures = 0

    def fits(self, *inputs: Tensor) -> bool:
        """Whether inputs fit the static buffers (shapes and dtypes)."""
        return self.inputs is None or all(x.shape == b.shape and x.dtype == b.dtype for x, b in zip(inputs, self.inputs))

    def reset(self) -> None:
        """Capture again at the next call (the same buffers; no warm-up)."""
        self.graph = self.follow_up_graph = None

    def restart(self) -> None:
        """Start over: new buffers from the next call's inputs, ``warmup`` eager calls, a new capture."""
        self.graph = self.follow_up_graph = self.inputs = self.output = self.follow_up_output = None
        self.calls = 0

    def __call__(self, *inputs: Tensor) -> Any:
        if self.inputs is None:
            self.inputs = tuple(torch.empty_like(x) for x in inputs)
        for buffer, x in zip(self.inputs, inputs):
            buffer.copy_(x)
        if self.graph is not None:
            self.graph.replay()
        elif not self.capture:
            self.output = self.fn(*self.inputs)
        elif self.calls < self.warmup:
            self.output = self._on_side_stream(self.fn, *self.inputs)
        else:
            self.graph, self.output = self._capture(self.fn, *self.inputs)
            if self.follow_up is not None:
                self.follow_up_graph, self.follow_up_output = self._capture(self.follow_up)
            self.captures += 1
            self.graph.replay()  # capturing records the kernels without running them
        self.calls += 1
        return self.output

    def run_follow_up(self) -> Any:
        """Run ``follow_up`` once after a call; returns its output (static tensors once captured)."""
        if self.follow_up_graph is not None:
            self.follow_up_graph.replay()
        elif not self.capture:
            self.follow_up_output = self.follow_up()
        else:
            self.follow_up_output = self._on_side_stream(self.follow_up)
        self.follow_ups += 1
        return self.follow_up_output

    @staticmethod
    def _on_side_stream(fn: Callable[..., Any], *args: Any) -> Any:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            output = fn(*args)
        torch.cuda.current_stream().wait_stream(side)
        return output

    def _capture(self, fn: Callable[..., Any], *args: Any) -> tuple[Any, Any]:
        """A new graph of ``fn(*args)``, and the output it leaves its results in."""
        graph = torch.cuda.CUDAGraph()
        for opt in self.optimizers:  # backward allocates the gradients in the graph's memory pool
            opt.zero_grad(set_to_none=True)
        # thread_local: the DataLoader's pin-memory thread may allocate pinned memory meanwhile
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            output = fn(*args)
        return graph, output


class CapturedStep:
    """One GAN training batch as a :class:`GraphedStep` on the raw optimizers: the D updates and ``n_gen`` G
    updates, then any extra G updates ``decide_g_updates`` asks for on the host (the second graph). Returns the static
    loss terms. A changed optimizer hyper-parameter is captured again at the next batch; replays count their optimizer
    steps on Lightning's wrappers. ``capture=False`` runs the step eagerly."""

    def __init__(self, module: Any, warmup: int = 3, capture: bool = True) -> None:
        self.module = module
        self.wrapped = module.optimizers()       # Lightning's wrappers: they count the steps
        self.optimizers = [opt.optimizer for opt in self.wrapped]
        # the second graph only for a module that may need it: its capture costs time and memory
        follow_up = self.extra_generator_update if module.may_add_g_updates() else None
        self.graphed = GraphedStep(self.step, self.optimizers, warmup, capture, follow_up=follow_up)
        self.d_phase: Any = None                 # what the extra generator updates take on from the D updates
        self.hyper: list | None = None           # the optimizers' hyper-parameters at the capture
        self.key = module.capture_key()          # what the graph holds besides them (see accepts)
        self.restarts = 0

    def fits(self, real: Tensor, labels: Tensor) -> bool:
        """Whether a batch fits the static buffers (an epoch's smaller last batch runs eagerly)."""
        return self.graphed.fits(real, labels)

    def accepts(self, real: Tensor, labels: Tensor) -> bool:
        """Whether this batch goes through the captured step (it must fit the buffers); a new ``capture_key``
        (e.g. PGGAN's next resolution) first restarts the capture, warm-up included."""
        key = self.module.capture_key()
        if key != self.key:
            self.graphed.restart()
            self.key = key
            self.restarts += 1
        return self.fits(real, labels)

    def step(self, real: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """The batch (on the static buffers): the module's D updates and ``n_gen`` G updates."""
        (opt_d, opt_g), module = self.optimizers, self.module
        terms, self.d_phase = module.discriminator_updates(real, labels, opt_d, Tensor.backward)
        terms.update(module.generator_updates(self.d_phase, 0, module.n_gen, opt_g, Tensor.backward))
        return terms

    def extra_generator_update(self) -> dict[str, Tensor]:
        """One more G update of the batch (fresh noise), after :meth:`step`."""
        n_gen = self.module.n_gen
        return self.module.generator_updates(self.d_phase, n_gen, n_gen + 1, self.optimizers[1], Tensor.backward)

    def hyper_parameters(self) -> list:
        """The optimizers' hyper-parameters, per param group (what a capture bakes in)."""
        return [{k: v for k, v in group.items() if k != "params"} for opt in self.optimizers for group in opt.param_groups]

    def __call__(self, real: Tensor, labels: Tensor) -> dict[str, Tensor]:
        if self.graphed.graph is not None and self.hyper_parameters() != self.hyper:
            self.graphed.reset()                 # a scheduler moved the learning rate: capture again
        captures = self.graphed.captures
        terms = self.graphed(real, labels)
        if self.graphed.captures != captures:
            self.hyper = self.hyper_parameters()
        n_gen = self.module.n_gen
        extra = self.module.decide_g_updates(terms) - n_gen   # decided on the host, from the terms of the D updates
        if extra < 0 or (extra > 0 and self.graphed.follow_up is None):
            raise RuntimeError(f"{type(self.module).__name__}.decide_g_updates returned {n_gen + extra} generator updates "
                               f"with n_gen={n_gen} on a steady batch: fewer cannot be captured (steady_batch), "
                               f"and more need may_add_g_updates() to be true")
        for _ in range(extra):
            terms = {**terms, **self.graphed.run_follow_up()}  # a new dict: the static one stays the graph's
        for _ in range(self.d_phase.updates + n_gen + extra):
            count_optimizer_step(self.wrapped[0])
        return terms


def make_capturable(optimizers: list[torch.optim.Optimizer]) -> list[list[bool]]:
    """Switch Adam-like optimizers (fused ones too) to ``capturable`` and move host step counts to the device;
    returns the previous flags per optimizer and param group (what checkpoints keep)."""
    before = [[group.get("capturable", False) for group in opt.param_groups] for opt in optimizers]
    for opt in optimizers:
        for group in opt.param_groups:
            if "capturable" in group:
                group["capturable"] = True
            for p in group["params"]:
                step = opt.state.get(p, {}).get("step")
                if isinstance(step, Tensor) and step.device != p.device:
                    opt.state[p]["step"] = step.to(p.device)
    return before


class FastPath(L.Callback):
    """Applies ``channels_last``, ``torch.compile`` (both in ``setup``, before the module moves to its device) and
    the captured step to the GAN module; settings that fail on this run are refused before training.

    Args:
        channels_last: store the nets NHWC (worth it on GPUs with mixed precision).
        compile: ``false``, ``true``/``default``, ``reduce-overhead``, ``max-autotune`` or
            ``max-autotune-no-cudagraphs`` (failing ones are refused: :func:`compile_refusal`).
        cuda_graph: replay the whole batch as one CUDA graph (:class:`CapturedStep`; GPU only).
        graph_warmup: eager batches before the capture.
    """

    def __init__(self, channels_last: bool = False, compile: str | bool | None = False, cuda_graph: bool = False,
                 graph_warmup: Count = 3) -> None:
        self.channels_last = bool(channels_last)
        self.compile = compile_mode(compile)
        self.compiled: list[str] = []
        if not isinstance(cuda_graph, bool):
            raise UserError(f"callbacks.fast_path.cuda_graph={cuda_graph!r} must be true or false.")
        self.cuda_graph, self.graph_warmup = cuda_graph, int(graph_warmup)
        self._flags: list[list[bool]] | None = None
        self.captures = 0  # graphs captured by the fits that ended (a new learning rate captures again)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        device_type = trainer.strategy.root_device.type
        refusal = compile_refusal(self.compile, self.channels_last, device_type)
        if refusal is None and self.cuda_graph:
            refusal = self.capture_refusal(trainer, pl_module, device_type)
        if refusal is not None:
            raise UserError(refusal)
        if self.channels_last:
            pl_module.to(memory_format=torch.channels_last)
        if self.compile is not None and not self.compiled:
            self.compiled = compile_nets(pl_module, self.compile, device_type)

    def capture_refusal(self, trainer: L.Trainer, pl_module: L.LightningModule, device_type: str) -> str | None:
        """Why ``cuda_graph=true`` cannot hold this run's batch, in one sentence (``None``: it can)."""
        key = "callbacks.fast_path.cuda_graph=true"
        if device_type != "cuda":
            return f"{key} captures the step on a GPU, and this run trains on {device_type}; leave it off there."
        if trainer.world_size > 1:
            return (f"{key} captures one device's step without DDP's gradient all-reduce; train on one GPU "
                    f"(trainer.devices=1) or leave callbacks.fast_path.cuda_graph=false.")
        if str(trainer.precision) == "16-mixed":
            return (f"{key} cannot hold float16's loss scaling (it checks for overflow on the host every step); use "
                    f"trainer.precision=bf16-mixed or 32.")
        if not hasattr(pl_module, "capture_refusal"):
            return f"{key} needs a gan_lab GAN module; {type(pl_module).__name__} is not one."
        return pl_module.capture_refusal()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Makes the optimizers capturable (after a checkpoint restored their state) and attaches the captured step."""
        if not self.cuda_graph:
            return
        raw = [opt.optimizer for opt in pl_module.optimizers()]
        other = [type(opt).__name__ for opt in raw if not isinstance(opt, CAPTURABLE)]
        if other:
            raise UserError(f"callbacks.fast_path.cuda_graph=true needs optimizers whose step a CUDA graph can hold "
                            f"({', '.join(c.__name__ for c in CAPTURABLE)}); this run has {other[0]}.")
        self._flags = make_capturable(raw)
        plugin = trainer.precision_plugin
        if hasattr(plugin, "cache_enabled"):
            plugin.cache_enabled = False  # autocast's weight-cast cache cannot be captured
        pl_module.captured_step = CapturedStep(pl_module, self.graph_warmup)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.cuda_graph and pl_module.captured_step is not None:
            self.captures += pl_module.captured_step.graphed.captures
            pl_module.captured_step = None  # frees the graph and its memory pool

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        """Writes the optimizers' own ``capturable`` flags into the checkpoint (it resumes without the graph too)."""
        if self._flags is None:
            return
        for state, flags in zip(checkpoint.get("optimizer_states", []), self._flags):
            for group, flag in zip(state.get("param_groups", []), flags):
                if "capturable" in group:
                    group["capturable"] = flag
