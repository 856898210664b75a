"""DDP with two CPU processes (gloo): optimisers in step, data sharded, the run's summary true for
both launchers (processes started as scripts, or spawned), exact resume mid-epoch and at epoch ends."""
from __future__ import annotations

import csv
import json
import signal
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from gan_lab.build import build_model
from gan_lab.callbacks.signals import GracefulStop
from gan_lab.metrics import Evaluator
from gan_lab.run import train
from tests.conftest import TINY, run_cli


class RankProbe(L.Callback):
    """Saves, per rank, the data indices served each epoch, the final weights and a noise draw."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self.indices: dict[int, list[int]] = {}
        self.terms: dict[int, dict[str, float]] = {}  # this rank's loss terms on logging steps
        self.decisions: dict[int, dict[str, float]] = {}  # what the rank decided by the end of each batch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.indices[trainer.current_epoch] = [int(i) for i in trainer.train_dataloader.sampler]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.is_logging_step():
            self.terms[pl_module.batches_seen] = {k: float(v) for k, v in outputs.items()}
        decisions = {"global_step": trainer.global_step}
        if hasattr(pl_module, "extra_g_updates"):
            decisions["extra_g_updates"] = pl_module.extra_g_updates
        if pl_module.adaptive_augment:
            decisions.update(ada_p=pl_module.d_augment.p, ada_rt=pl_module.d_augment.rt)
        self.decisions[pl_module.batches_seen] = decisions

    def on_train_end(self, trainer, pl_module) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        torch.save({
            "world_size": trainer.world_size,
            "indices": self.indices,
            "terms": self.terms,
            "decisions": self.decisions,
            "parameters": {k: v.detach().cpu().clone() for k, v in pl_module.named_parameters()},
            "noise": pl_module.noise.sample(4, "cpu"),
            "batches_seen": pl_module.batches_seen,
            "images_seen": pl_module.images_seen,
            "logged": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")},
        }, self.dirpath / f"rank_{trainer.global_rank}.pt")


class StopAt(L.Callback):
    """Requests a graceful stop during batch ``batch`` (1-based) as a SIGTERM does (the signal handler
    only calls ``GracefulStop.request``), on every rank or on ``rank`` only (a signal that reaches the
    processes at different batches), deterministically whatever the processes' timing."""

    def __init__(self, batch: int, rank: int | None = None) -> None:
        self.batch, self.rank = batch, rank

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if pl_module.batches_seen + 1 == self.batch and self.rank in (None, trainer.global_rank):
            next(cb for cb in trainer.callbacks if isinstance(cb, GracefulStop)).request(signal.SIGTERM)


class CountingEvaluator(Evaluator):
    """The evaluator, leaving a file per evaluation named by the process that ran it."""

    def __init__(self, count_dir: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.count_dir = Path(count_dir)

    def evaluate(self, model, datamodule, out_dir=None):
        self.count_dir.mkdir(parents=True, exist_ok=True)
        (self.count_dir / f"rank{torch.distributed.get_rank()}_{time.time_ns()}").touch()
        return super().evaluate(model, datamodule, out_dir)


def ddp_cpu_cli(run: Path, *overrides: str, probe: Path | None = None, timeout: int = 600):
    """A 2-process CPU DDP run of the real entry point (tiny nets), optionally with a RankProbe."""
    probing = [] if probe is None else ["+callbacks.rank_probe._target_=tests.test_ddp.RankProbe",
                                        f"+callbacks.rank_probe.dirpath={probe}"]
    return run_cli(*TINY, "trainer=ddp_cpu", "model.generator.width=8", "model.discriminator.width=8",
                   *probing, *overrides, f"hydra.run.dir={run}", timeout=timeout)


def ddp_cpu_run(run: Path, probe: Path, *overrides: str, timeout: int = 600) -> list[dict]:
    """A completed 2-process CPU DDP run; the per-rank probes."""
    res = ddp_cpu_cli(run, *overrides, probe=probe, timeout=timeout)
    assert res.returncode == 0, res.stderr[-3000:]
    return [torch.load(probe / f"rank_{r}.pt", weights_only=False) for r in (0, 1)]


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    run, probe = tmp_path / "run", tmp_path / "probe"
    ranks = ddp_cpu_run(run, probe)
    assert all(r["world_size"] == 2 for r in ranks)

    # both optimisers stepped in sync: identical G and D parameters on both ranks
    p0, p1 = ranks[0]["parameters"], ranks[1]["parameters"]
    assert p0.keys() == p1.keys() and any(k.startswith("generator.") for k in p0)
    assert any(k.startswith("discriminator.") for k in p0)
    for key in p0:
        assert torch.equal(p0[key], p1[key]), key

    # the counters count batches per rank and images of all ranks
    assert all(r["batches_seen"] == 6 for r in ranks)
    assert all(r["images_seen"] == 6 * 64 * 2 for r in ranks)
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["batches_seen"] == 6 and summary["images_seen"] == 768
    assert summary["epochs"] == 2 and summary["optimizer_steps"] == 6 * 2
    assert (run / "samples" / "final.png").is_file() and (run / "checkpoints" / "last.ckpt").is_file()

    # per-rank noise streams differ
    assert not torch.equal(ranks[0]["noise"], ranks[1]["noise"])

    # the logged losses are the mean of the ranks' (one collective per logging step)
    with open(run / "metrics.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("train/d_loss")]
    assert len(rows) == 6  # trainer=debug logs every batch
    for row in rows:
        batch = int(float(row["train/batches_seen"]))
        per_rank = [ranks[r]["terms"][batch] for r in (0, 1)]
        assert per_rank[0]["d_loss"] != per_rank[1]["d_loss"]  # each rank trains on its own share
        for key in ("d_loss", "g_loss", "d_real", "d_fake"):
            assert float(row[f"train/{key}"]) == pytest.approx((per_rank[0][key] + per_rank[1][key]) / 2, rel=1e-5)

    # the data is sharded: each rank takes every second position of the epoch's order (a function of
    # (seed, epoch), new every epoch), the same number each: disjoint shares covering the epoch
    n = 1797 - round(1797 * 0.1)
    for epoch in (0, 1):
        g = torch.Generator().manual_seed(0 * 1_000_003 + epoch)
        order = torch.randperm(n, generator=g).tolist()
        for r in (0, 1):
            assert ranks[r]["indices"][epoch] == order[r::2][:n // 2]
        shares = [set(ranks[r]["indices"][epoch]) for r in (0, 1)]
        assert not shares[0] & shares[1] and len(shares[0] | shares[1]) == n - n % 2
    assert ranks[0]["indices"][0] != ranks[0]["indices"][1]

    # the run is reproducible: the same seed and world size give the same weights again
    again = ddp_cpu_run(tmp_path / "run_again", tmp_path / "probe_again")
    for key in p0:
        assert torch.equal(again[0]["parameters"][key], p0[key]), key
    assert torch.equal(again[1]["noise"], ranks[1]["noise"])


@pytest.mark.slow
def test_ddp_ranks_serve_a_draw_of_their_own_share_to_each_critic_update(tmp_path):
    """model.fresh_reals under DDP: each rank's batch holds n_critic draws from its own share of the
    epoch; the ranks stay in step and the counters count every draw of every rank."""
    run = tmp_path / "run"
    ranks = ddp_cpu_run(run, tmp_path / "probe", "model=wgan_gp", "model.n_critic=2", "data.batch_size=16")
    p0, p1 = ranks[0]["parameters"], ranks[1]["parameters"]
    assert p0.keys() == p1.keys() and all(torch.equal(p0[k], p1[k]) for k in p0)
    assert all(r["batches_seen"] == 6 and r["images_seen"] == 6 * 2 * 16 * 2 for r in ranks)  # batches x draws x B x ranks
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["optimizer_steps"] == 6 * (2 + 1) and summary["images_seen"] == 384
    n = 1797 - round(1797 * 0.1)
    shares = [set(ranks[r]["indices"][0]) for r in (0, 1)]
    assert not shares[0] & shares[1] and len(shares[0] | shares[1]) == n - n % 2


@pytest.mark.slow
def test_ddp_resume_mid_epoch_and_at_epoch_end_is_exact(tmp_path):
    """2 epochs of 3 batches in one go == stopped after batch 2 (mid-epoch 0), resumed to the end of
    epoch 0, resumed and stopped after batch 5 (mid-epoch 1, requested on rank 1 only), resumed to
    the end: the same weights,
    and each rank continues its own noise stream (its next noise draw is the uninterrupted run's)."""
    full = ddp_cpu_run(tmp_path / "full", tmp_path / "probe_full")

    def ckpt(name: str) -> str:
        return f"ckpt_path={tmp_path / name / 'checkpoints' / 'last.ckpt'}"

    stop = ["+callbacks.stop_at._target_=tests.test_ddp.StopAt"]
    res = ddp_cpu_cli(tmp_path / "cut", *stop, "+callbacks.stop_at.batch=2")
    assert res.returncode == 143, res.stderr[-3000:]
    assert "stopped after batch 2 (epoch 0)" in res.stderr
    res = ddp_cpu_cli(tmp_path / "epoch0", ckpt("cut"), "trainer.max_epochs=1")
    assert res.returncode == 0, res.stderr[-3000:]
    # the request reaches rank 1 only: both ranks stop after the same batch
    res = ddp_cpu_cli(tmp_path / "cut1", ckpt("epoch0"), *stop, "+callbacks.stop_at.batch=5",
                      "+callbacks.stop_at.rank=1")
    assert res.returncode == 143, res.stderr[-3000:]
    assert "stopped after batch 5 (epoch 1)" in res.stderr
    resumed = ddp_cpu_run(tmp_path / "resumed", tmp_path / "probe_resumed", ckpt("cut1"))

    assert not torch.equal(full[0]["noise"], full[1]["noise"])
    for r in (0, 1):
        assert resumed[r]["batches_seen"] == 6 and resumed[r]["images_seen"] == 6 * 64 * 2
        for key, value in full[r]["parameters"].items():
            assert torch.equal(resumed[r]["parameters"][key], value), (r, key)
        assert torch.equal(resumed[r]["noise"], full[r]["noise"]), r
    # the last resume served epoch 1's second half on each rank (the probe sees no epoch start then)
    assert resumed[0]["indices"] == {}


@pytest.mark.slow
def test_ddp_spawn_summary_and_main_process_model(make_cfg, monkeypatch):
    """ddp_spawn trains in worker processes: metrics.json still states what they trained, and the
    module of the calling process comes back with their weights and counters."""
    built = []

    def keep_model(cfg):
        model = build_model(cfg)
        built.extend([model, {k: v.clone() for k, v in model.state_dict().items()}])
        return model

    monkeypatch.setattr("gan_lab.run.build_model", keep_model)
    cfg = make_cfg("trainer=ddp_cpu", "trainer.strategy=ddp_spawn_find_unused_parameters_true",
                   "trainer.limit_train_batches=2", "data.batch_size=16", "model.generator.width=8",
                   "model.discriminator.width=8", "optimized_metric=train/g_loss")
    value = train(cfg)

    batches, images = 2 * 2, 2 * 2 * 16 * 2  # per process: 2 epochs x 2 batches; x 16 images x 2 processes
    summary = json.loads((Path(cfg.run_dir) / "metrics.json").read_text())
    assert summary["status"] == "completed" and summary["epochs"] == 2
    assert summary["batches_seen"] == batches and summary["images_seen"] == images
    assert summary["optimizer_steps"] == batches * 2  # one D and one G step per batch
    assert value == summary["final"]["train/g_loss"]  # the workers' logged metrics came back

    # the calling process's module holds the trained counters and weights (those of the last
    # checkpoint, which the workers wrote at the end of training)
    model, initial = built
    assert (model.batches_seen, model.images_seen) == (batches, images)
    trained = torch.load(Path(cfg.run_dir) / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    state = model.state_dict()
    assert state.keys() == trained.keys()
    for key in state:
        assert torch.equal(state[key], trained[key]), key
    assert any(not torch.equal(state[k], initial[k]) for k in state if k.startswith("generator."))
    assert any(not torch.equal(state[k], initial[k]) for k in state if k.startswith("discriminator."))


@pytest.mark.slow
def test_ddp_time_limit_mid_epoch_resumes_exactly(tmp_path):
    """trainer.max_time reached after batch 2 (mid-epoch 0) on both processes: they save together, the
    run ends with exit status 0, and resuming with more time gives the uninterrupted weights."""
    full = ddp_cpu_run(tmp_path / "full", tmp_path / "probe_full")
    clock = ["+callbacks.clock._target_=tests.test_resume.BatchClock"]
    res = ddp_cpu_cli(tmp_path / "cut", *clock, "+callbacks.clock.seconds=2")
    assert res.returncode == 0, res.stderr[-3000:]
    cut_last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    assert all(s in res.stderr for s in ("trainer.max_time", "0:00:02", "batch 2", f"ckpt_path={cut_last}")), \
        res.stderr[-3000:]
    summary = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert (summary["status"], summary["reason"], summary["batches_seen"]) == ("interrupted", "max_time", 2)
    resumed = ddp_cpu_run(tmp_path / "resumed", tmp_path / "probe_resumed", *clock, "+callbacks.clock.seconds=100",
                          f"ckpt_path={tmp_path / 'cut' / 'checkpoints' / 'last.ckpt'}")
    for r in (0, 1):
        assert resumed[r]["batches_seen"] == 6
        for key, value in full[r]["parameters"].items():
            assert torch.equal(resumed[r]["parameters"][key], value), (r, key)


ARTGAN = ["model=artgan", "model.samples_per_class=2", "data.image_size=32"]


@pytest.mark.slow
def test_ddp_ranks_decide_artgan_extra_g_update_together(tmp_path):
    """``extra_g_when`` decides from D's loss averaged over the ranks: both ranks make the same updates
    (each deciding from its own batch, one would make a G update the other does not, and their
    gradient collectives would no longer pair up: the run hung)."""
    plain = ddp_cpu_run(tmp_path / "plain", tmp_path / "probe_plain", *ARTGAN, timeout=300)
    lo, hi = sorted(plain[r]["terms"][1]["d_loss"] for r in (0, 1))
    threshold = lo + 0.75 * (hi - lo)       # below it on one rank, above it on the other; their mean is below
    ranks = ddp_cpu_run(tmp_path / "run", tmp_path / "probe", *ARTGAN, "model.extra_g_when=d_loss",
                        f"model.extra_g_threshold={threshold!r}", timeout=300)
    assert [ranks[r]["terms"][1]["d_loss"] for r in (0, 1)] == [plain[r]["terms"][1]["d_loss"] for r in (0, 1)]
    assert ranks[0]["decisions"] == ranks[1]["decisions"]
    extra = [0] + [ranks[0]["decisions"][b]["extra_g_updates"] for b in range(1, 7)]
    for batch in range(1, 7):
        mean = (ranks[0]["terms"][batch]["d_loss"] + ranks[1]["terms"][batch]["d_loss"]) / 2
        assert extra[batch] - extra[batch - 1] == (mean < threshold), batch
    assert extra[1] == 1                    # the first batch's decision was the mean's, not one rank's
    for key, value in ranks[0]["parameters"].items():
        assert torch.equal(ranks[1]["parameters"][key], value), key


@pytest.mark.slow
def test_ddp_ranks_tune_ada_from_all_their_outputs(tmp_path):
    """ADA's r_t sums D's signs over every rank's real batch: the ranks hold the same r_t and p (and a
    checkpoint, written by rank 0, holds every rank's state)."""
    ranks = ddp_cpu_run(tmp_path / "run", tmp_path / "probe", "d_augment=ada", "d_augment.interval=1",
                        "d_augment.speed_images=256", timeout=300)
    assert ranks[0]["decisions"] == ranks[1]["decisions"]
    rts = [ranks[0]["decisions"][b]["ada_rt"] for b in range(1, 7)]
    assert len(set(rts)) > 1 and any(ranks[0]["decisions"][b]["ada_p"] > 0 for b in range(1, 7))


@pytest.mark.slow
def test_ddp_ranks_judge_divergence_together(tmp_path):
    """The divergence guard bounds the loss terms averaged over the processes, as they are logged: a
    term beyond ``max_abs_loss`` on one process alone stops neither (it stopped that one, and the
    other was left waiting for it)."""
    plain = ddp_cpu_run(tmp_path / "plain", tmp_path / "probe_plain", timeout=300)

    def largest(terms: dict[str, float]) -> float:
        return max(abs(v) for v in terms.values())

    batches = range(1, 7)
    mean = [largest({k: (plain[0]["terms"][b][k] + plain[1]["terms"][b][k]) / 2 for k in plain[0]["terms"][b]})
            for b in batches]
    bound = max(mean) * (1 + 1e-4)
    assert any(largest(plain[r]["terms"][b]) > bound for r in (0, 1) for b in batches)  # one process goes beyond
    ranks = ddp_cpu_run(tmp_path / "run", tmp_path / "probe", f"callbacks.divergence.max_abs_loss={bound!r}",
                        "callbacks.divergence.patience=1", timeout=300)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "completed"
    assert all(r["batches_seen"] == 6 for r in ranks)


@pytest.mark.slow
def test_ddp_evaluates_on_one_process_and_every_process_logs_its_values(tmp_path):
    counts = tmp_path / "counts"
    ranks = ddp_cpu_run(tmp_path / "run", tmp_path / "probe", "callbacks=with_metrics", "callbacks.metrics.every_n_epochs=1",
                        "callbacks.metrics.evaluator._target_=tests.test_ddp.CountingEvaluator",
                        f"+callbacks.metrics.evaluator.count_dir={counts}", "callbacks.metrics.evaluator.metrics=[scores]",
                        "callbacks.metrics.evaluator.num_samples=16", timeout=300)
    evaluations = json.loads((tmp_path / "run" / "metrics.json").read_text())["evaluations"]
    assert sorted(p.name.split("_")[0] for p in counts.iterdir()) == ["rank0"] * len(evaluations) == ["rank0"] * 2
    assert ranks[0]["logged"] and ranks[0]["logged"] == ranks[1]["logged"]
    assert ranks[0]["logged"]["val/d_real"] == pytest.approx(evaluations[-1]["results"]["scores"]["d_real"], rel=1e-6)
