"""No host synchronisation in the training step except on logging steps, for every GAN variant.

On a GPU the host queues kernels ahead of the device; anything that needs a device value on the
host (``.item()``, ``float(t)``, ``if t:``, ``.cpu()``, ``.tolist()``, boolean indexing, a blocking
host-to-device copy) stops the host until the device has caught up, and the next batch's kernels
are queued late. These tests run on CPU, where no such wait is observable, so they count the
operations that would cause one on an accelerator:

- under a ``TorchDispatchMode``: ``aten._local_scalar_dense`` (``.item()``, ``float``, ``int``,
  ``bool``, ``if t:``, formatting) and the ops whose output shape depends on the data
  (``nonzero``, ``masked_select``, ``unique``, boolean indexing, ...), plus ``aten.equal``;
- under a ``TorchFunctionMode``: explicit copies to the host (``.cpu()``, ``.tolist()``,
  ``.numpy()``) and ``torch.tensor(data, device=...)`` (a blocking host-to-device copy).

The device is simulated: every tensor counts as living on the accelerator except the ones the code
deliberately keeps on the host, i.e. factory results created without a ``device`` (as on a GPU run,
where they land on the CPU: e.g. Adam's ``step`` counters), explicit host copies, and whatever is
computed from those alone, and the training set (batches are gathered in host memory). Reading
such a host tensor is free and is not counted. ``Tensor.to("cpu")`` is a copy to the host, while
``Tensor.to(torch.device)`` (``self.device``) is a move to the accelerator. ``F.one_hot`` with
``num_classes`` reads the labels' range on the CPU backend only (CUDA checks it on the device), so
those reads are not counted.

The modes are active from the first batch to the end of training, and the count is attributed to
the batch whose ``on_train_batch_start`` came last, so each batch's window holds everything that
runs per batch: the module's hooks and step (forward, backward, optimiser steps), every callback's
``on_train_batch_end``, Lightning's own per-batch logging and progress bar, and the fetch and
transfer of the next batch. Epoch-end work (sample grids, checkpoints, schedulers) is counted apart.

What a logging batch costs: three transfers of ours (the progress bar's copy of d_loss and g_loss,
the training curves' copy of the logged values, the divergence guard's check) and one ``.item()``
per value Lightning writes to the loggers; ArtGAN with ``extra_g_when`` adds one on every batch.
"""
from __future__ import annotations

import csv
import os
import traceback
from collections import defaultdict
from dataclasses import dataclass

import lightning as L
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary

import gan_lab.run
from gan_lab.compat import DispatchMode, aten_name
from gan_lab.run import train

#: dispatch ops that read a device value on the host (result shape or value needed by the host)
SYNC_OPS = {
    "aten::_local_scalar_dense": "item",
    "aten::nonzero": "data-dependent shape",
    "aten::masked_select": "data-dependent shape",
    "aten::_unique": "data-dependent shape",
    "aten::_unique2": "data-dependent shape",
    "aten::unique_dim": "data-dependent shape",
    "aten::unique_consecutive": "data-dependent shape",
    "aten::repeat_interleave": "data-dependent shape",
    "aten::equal": "item",
}
#: index ops that sync when an index is a boolean mask
MASK_INDEX_OPS = {"aten::index", "aten::index_put", "aten::index_put_", "aten::_index_put_impl_"}
#: Python-level copies to the host
HOST_COPIES = {"cpu", "tolist", "numpy", "__array__"}
#: factory functions: the result lives where their ``device`` argument says (absent: the host)
FACTORIES = {"tensor", "as_tensor", "zeros", "ones", "full", "empty", "arange", "linspace", "randn", "rand",
             "randint", "randperm", "eye", "scalar_tensor", "from_numpy"}


def leaves(node) -> list:
    """The non-container values inside nested lists, tuples and dicts (an operator's arguments)."""
    if isinstance(node, (list, tuple)):
        return [leaf for item in node for leaf in leaves(item)]
    if isinstance(node, dict):
        return leaves(list(node.values()))
    return [node]


def _short(filename: str) -> str:
    for marker in ("site-packages" + os.sep, os.sep + "gan_lab" + os.sep):
        if marker in filename:
            return ("gan_lab" + os.sep if marker.startswith(os.sep) else "") + filename.split(marker, 1)[1]
    return filename


@dataclass
class Sync:
    """One would-be synchronisation: what it is and the Python frames that led to it (innermost last)."""

    kind: str
    frames: list[str]

    @property
    def origin(self) -> str:
        """The innermost frame outside torch: ``gan_lab/...`` when our code asked for the value."""
        return self.frames[-1] if self.frames else "?"

    @property
    def ours(self) -> bool:
        return self.origin.startswith("gan_lab" + os.sep)

    def __str__(self) -> str:
        return f"{self.kind} at {' <- '.join(reversed(self.frames[-5:]))}"


class SyncCounter(TorchFunctionMode):
    """Counts would-be host synchronisations per window (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.host = WeakIdKeyDictionary()  # tensors that live on the host on an accelerator run
        self.window: object = "setup"
        self.events: dict[object, list[Sync]] = defaultdict(list)
        self.dispatch = _DispatchCounter(self)
        self.cpu_only = 0  # > 0 inside a call whose reads happen on the CPU backend only

    # --- bookkeeping --------------------------------------------------------------------

    def is_host(self, t) -> bool:
        return isinstance(t, torch.Tensor) and t in self.host

    def mark_host(self, out) -> None:
        for t in leaves(out):
            if isinstance(t, torch.Tensor):
                self.host[t] = True

    def record(self, kind: str) -> None:
        if self.cpu_only:
            return
        frames = [f for f in traceback.extract_stack()
                  if f.filename != __file__ and f"{os.sep}torch{os.sep}" not in f.filename]
        self.events[self.window].append(Sync(kind, [f"{_short(f.filename)}:{f.lineno} {f.name}" for f in frames]))

    # --- Python-level calls ---------------------------------------------------------------

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name == "one_hot" and (args[1:2] or [kwargs.get("num_classes", -1)])[0] != -1:
            # with num_classes given, only the CPU kernel reads the labels' min and max (bounds
            # checks); CUDA relies on a device-side assert and does not synchronise
            self.cpu_only += 1
            try:
                return func(*args, **kwargs)
            finally:
                self.cpu_only -= 1
        if name == "to" and args and isinstance(args[0], torch.Tensor):
            return self.move(func, args, kwargs)
        if name in HOST_COPIES and args and isinstance(args[0], torch.Tensor):
            if not self.is_host(args[0]):
                self.record(f"copy to host ({name})")
            out = func(*args, **kwargs)
            if name == "cpu":  # a copy on an accelerator run: a new host tensor
                out = out.clone()
                self.mark_host(out)
            return out
        out = func(*args, **kwargs)
        if name in FACTORIES and not any(isinstance(a, torch.Tensor) for a in leaves(args)):
            device = kwargs.get("device")
            if device is None or device == "cpu":
                self.mark_host(out)
            elif name in ("tensor", "as_tensor", "from_numpy"):
                self.record(f"host-to-device copy (torch.{name})")
        elif name == "from_numpy":
            self.mark_host(out)
        return out

    def move(self, func, args, kwargs):
        """``Tensor.to``: the string ``"cpu"`` is a copy to the host; a ``torch.device`` (``self.device``,
        ``real.device``: the accelerator on a GPU run) a copy to the device; a dtype keeps the place."""
        tensor = args[0]
        device = kwargs.get("device", next((a for a in args[1:] if isinstance(a, (str, torch.device))), None))
        out = func(*args, **kwargs)
        if device is None:
            return out
        if device == "cpu" or (isinstance(device, str) and device.startswith("cpu")):
            if not self.is_host(tensor):
                self.record("copy to host (to)")
            out = out.clone() if out is tensor else out
            self.mark_host(out)
            return out
        if self.is_host(tensor):  # host -> device: a new tensor on an accelerator run
            out = out.clone() if out is tensor else out
            self.host.pop(out, None)
        return out

    # --- entering and leaving both modes ------------------------------------------------

    def __enter__(self):
        super().__enter__()
        self.dispatch.__enter__()
        return self

    def __exit__(self, *exc):
        self.dispatch.__exit__(*exc)
        return super().__exit__(*exc)


class _DispatchCounter(DispatchMode):
    def __init__(self, owner: SyncCounter) -> None:
        super().__init__()
        self.owner = owner

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        owner = self.owner
        name = aten_name(func)
        inputs = [t for t in leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        on_device = [t for t in inputs if not owner.is_host(t)]
        if name in SYNC_OPS and on_device:
            owner.record(f"{SYNC_OPS[name]} ({name})")
        elif name in MASK_INDEX_OPS and any(t.dtype in (torch.bool, torch.uint8) for t in on_device[1:]):
            owner.record(f"boolean mask ({name})")
        elif name == "aten::copy_" and owner.is_host(args[0]) and not owner.is_host(args[1]):
            owner.record(f"copy to host ({name})")
        out = func(*args, **kwargs)
        if inputs and not on_device:
            owner.mark_host(out)
        return out


class SyncProbe(L.Callback):
    """Runs a :class:`SyncCounter` from the first batch to the end of training, one window per batch.

    It must be the first callback, so that a batch's window opens before any other hook of that batch.
    """

    def __init__(self) -> None:
        self.counter = SyncCounter()
        self.batches = 0
        self._active = False

    def on_train_start(self, trainer, pl_module) -> None:
        # the training set lives in host memory: batches are gathered there, then moved to the device
        dataset = trainer.train_dataloader.dataset
        for value in vars(dataset).values():
            if isinstance(value, torch.Tensor):
                self.counter.host[value] = True

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.counter.window = ("epoch_start", trainer.current_epoch)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self._active:
            self.counter.__enter__()
            self._active = True
        self.counter.window = self.batches
        self.batches += 1

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.counter.window = ("epoch_end", trainer.current_epoch)

    def on_train_end(self, trainer, pl_module) -> None:
        self._leave()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._leave()

    def _leave(self) -> None:
        if self._active:
            self.counter.__exit__(None, None, None)
            self._active = False

    def syncs(self, batch: int) -> list[Sync]:
        return self.counter.events.get(batch, [])

    def report(self) -> str:
        return "\n".join(f"{window}: {sync}" for window, events in self.counter.events.items() for sync in events)


def probe_run(make_cfg, monkeypatch, *overrides: str) -> SyncProbe:
    """Train through the real entry point with the default callbacks and a :class:`SyncProbe` first."""
    probe = SyncProbe()
    build = gan_lab.run.build_callbacks
    monkeypatch.setattr(gan_lab.run, "build_callbacks", lambda cfg: [probe, *build(cfg)])
    cfg = make_cfg(*BASE, *overrides, tiny=False)
    train(cfg)
    return probe


#: one epoch of 6 batches of 8 images, logged after every third; the progress bar refreshes on every batch
BASE = ["trainer=debug", "trainer.max_epochs=1", "trainer.limit_train_batches=6", "trainer.log_every_n_steps=3",
        "data.batch_size=8", "noise.latent_dim=8", "trainer.enable_progress_bar=true",
        "callbacks.progress_bar.refresh_rate=1"]
#: the batches (0-based) after which a row is written to the loggers: the third and the sixth
LOGGING_BATCHES = [2, 5]

MODELS = {
    "dcgan": ["model=dcgan", "data.image_size=16", "model.generator.width=4", "model.discriminator.width=4",
              "model.num_samples=4"],
    "cgan_mlp": ["model=cgan_mlp", "data.image_size=8", "model.generator.hidden=[16,16]",
                 "model.discriminator.hidden=[16,16]", "model.samples_per_class=1"],
    "cdcgan": ["model=cdcgan", "data.image_size=16", "model.generator.width=4", "model.discriminator.width=4",
               "model.samples_per_class=1"],
    "artgan": ["model=artgan", "data.image_size=16", "model.generator.width=4", "model.samples_per_class=1"],
    "wgan_gp": ["model=wgan_gp", "data.image_size=16", "model.generator.width=4", "model.discriminator.width=4",
                "model.num_samples=4", "model.n_critic=2"],
    # 4x4 for two batches, then 8x8 fading in: growth, optimiser reset and resolution change per batch,
    # and the EMA of G updated after every batch (as in the preset)
    "pggan": ["model=pggan", "data.image_size=8", "model.generator.fmap_base=32", "model.generator.fmap_max=8",
              "model.discriminator.fmap_base=32", "model.discriminator.fmap_max=8", "model.num_samples=4",
              "callbacks.ema.half_life_images=100",
              "callbacks.growth.schedule.stages=[{resolution:4,fade_images:0,stable_images:16,batch_size:null},"
              "{resolution:8,fade_images:16,stable_images:1000,batch_size:null}]"],
}


#: syncs of gan_lab's own on a logging batch: the one host copy of the logged terms (loggers, progress
#: bar, training curves, run summary) and the divergence guard's check
OURS_ON_LOGGING_STEPS = 2


def csv_rows(run_dir) -> dict[int, dict[str, float]]:
    with open(run_dir / "metrics.csv") as fh:
        return {int(r["step"]): {k: float(v) for k, v in r.items() if v and k.startswith("train/")}
                for r in csv.DictReader(fh) if any(k.startswith("train/") and v for k, v in r.items())}


def check_logging_batch(probe: SyncProbe, batch: int, rows: dict, extra_ours: int = 0) -> None:
    """A logging batch: our own syncs are exactly the two copies (plus ``extra_ours``), each one
    transfer or read, and Lightning makes none (the loggers get host values)."""
    syncs = probe.syncs(batch)
    ours = [s for s in syncs if s.ours]
    assert len(ours) == OURS_ON_LOGGING_STEPS + extra_ours, probe.report()
    assert [s for s in syncs if not s.ours] == [], probe.report()
    # the row written on this batch is at step batches_seen = batch + 1 and holds this batch's values
    assert rows[batch + 1]["train/batches_seen"] == batch + 1


#: the models, and the Pokemon study's augmentation (random resized crop, flip, rotation on the batch)
CASES = {**MODELS, "dcgan+augment": [*MODELS["dcgan"], "augment=pokemon"]}


@pytest.mark.parametrize("model", list(CASES))
def test_no_host_sync_outside_logging_steps(make_cfg, monkeypatch, tmp_path, model):
    probe = probe_run(make_cfg, monkeypatch, *CASES[model])
    assert probe.batches == 6
    for batch in range(probe.batches):
        if batch not in LOGGING_BATCHES:
            assert probe.syncs(batch) == [], f"batch {batch} of {model} synchronises:\n{probe.report()}"
    rows = csv_rows(tmp_path / "run")
    # written to the loggers after these batches only, at step = batches trained
    assert sorted(rows) == [batch + 1 for batch in LOGGING_BATCHES]
    for batch in LOGGING_BATCHES:
        check_logging_batch(probe, batch, rows)


def test_sample_grid_at_batches_syncs_on_its_batch_only(make_cfg, monkeypatch, tmp_path):
    """``callbacks.sample_grid.at_batches`` compares an integer on every batch: the grid is copied to
    the host after its batch only, in one transfer."""
    probe = probe_run(make_cfg, monkeypatch, *MODELS["dcgan"], "callbacks.sample_grid.at_batches=[2]")
    for batch in range(probe.batches):
        if batch == 1:  # the window of the second batch (0-based) holds its on_train_batch_end
            syncs = probe.syncs(batch)
            assert [s.kind for s in syncs] == ["copy to host (cpu)"] and syncs[0].ours, probe.report()
        elif batch not in LOGGING_BATCHES:
            assert probe.syncs(batch) == [], f"batch {batch} synchronises:\n{probe.report()}"
    assert (tmp_path / "run" / "samples" / "batch_0000002.png").is_file()


def test_ada_syncs_once_per_interval(make_cfg, monkeypatch, tmp_path):
    """ADA adds D's signs up on the device and reads r_t on the host after every ``interval`` batches
    only: one transfer, on its batch (a logging batch adds it to its own two)."""
    probe = probe_run(make_cfg, monkeypatch, *MODELS["dcgan"], "d_augment=ada", "d_augment.interval=2")
    rows = csv_rows(tmp_path / "run")
    for batch in range(probe.batches):
        adjusts = batch % 2 == 1
        if batch in LOGGING_BATCHES:
            check_logging_batch(probe, batch, rows, extra_ours=int(adjusts))
            continue
        syncs = probe.syncs(batch)
        if adjusts:
            assert [s.kind for s in syncs] == ["copy to host (tolist)"] and syncs[0].ours, probe.report()
        else:
            assert syncs == [], f"batch {batch} synchronises:\n{probe.report()}"
    assert "train/ada_p" in rows[3] and "train/ada_rt" in rows[6]


@pytest.mark.parametrize("when", ["d_loss", "d_acc"])
def test_adaptive_generator_update_syncs_once_per_batch(make_cfg, monkeypatch, tmp_path, when):
    """``model.extra_g_when`` reads D's loss or accuracy on the host after every D update: one sync per
    batch, as artgan.py documents, and no other."""
    threshold = "1e9" if when == "d_loss" else "-1"  # D always "too strong": the extra update runs too
    probe = probe_run(make_cfg, monkeypatch, *MODELS["artgan"], f"model.extra_g_when={when}",
                      f"model.extra_g_threshold={threshold}")
    rows = csv_rows(tmp_path / "run")
    for batch in range(probe.batches):
        if batch in LOGGING_BATCHES:
            check_logging_batch(probe, batch, rows, extra_ours=1)
            continue
        syncs = probe.syncs(batch)
        assert len(syncs) == 1 and syncs[0].kind.startswith("item") and syncs[0].ours, probe.report()
    assert rows[6]["train/extra_g_updates"] == 6


def test_counter_counts_what_would_stall_an_accelerator():
    device = torch.device("cpu")  # stands for the accelerator, as self.device does in a module
    counter = SyncCounter()
    with counter:
        counter.window = "probe"
        x = torch.randn(8, device=device)
        labels = torch.randint(0, 3, (8,), device=device)
        host = torch.zeros(2)                    # no device: a host tensor, reading it is free
        host.sum().item()
        torch.nn.functional.one_hot(labels, 3)   # bounds checks on the CPU backend only
        x.sum().item()
        if x.mean() > 0:
            pass
        x[x > 0]
        x.cpu().tolist()                         # one copy; reading the host copy is free
        torch.tensor(1.0, device=device)
        torch.full((), 1.0, device=device)       # a fill kernel, no copy
        torch.nn.functional.one_hot(labels)      # num_classes from the data: labels.max() on the host
    kinds = [s.kind for s in counter.events["probe"]]
    assert kinds[:5] == ["item (aten::_local_scalar_dense)", "item (aten::_local_scalar_dense)",
                         "boolean mask (aten::index)", "copy to host (cpu)", "host-to-device copy (torch.tensor)"]
    assert kinds[5:] and all(k.startswith("item") for k in kinds[5:])


class SyncDebug(L.Callback):
    """Turns CUDA's own synchronisation check to ``"error"`` from the start of every batch that does not
    log to the start of the next one: any host synchronisation in that window raises. First callback."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        logs = (pl_module.batches_seen + 1) % trainer.log_every_n_steps == 0
        torch.cuda.set_sync_debug_mode("default" if logs else "error")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        torch.cuda.set_sync_debug_mode("default")

    on_exception = on_train_end = lambda self, *args: torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
@pytest.mark.parametrize("model", list(CASES))
def test_no_cuda_sync_outside_logging_steps(make_cfg, monkeypatch, tmp_path, model):
    """On a GPU, CUDA's synchronisation check agrees with the simulation above: a batch that does not
    log makes no host synchronisation."""
    build = gan_lab.run.build_callbacks
    monkeypatch.setattr(gan_lab.run, "build_callbacks", lambda cfg: [SyncDebug(), *build(cfg)])
    train(make_cfg(*BASE, *CASES[model], "trainer.accelerator=gpu", tiny=False))
    assert torch.cuda.get_sync_debug_mode() == 0
    assert sorted(csv_rows(tmp_path / "run")) == [batch + 1 for batch in LOGGING_BATCHES]
