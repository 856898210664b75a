"""DDP with two CPU processes (gloo): optimisers in step, data sharded, the run's summary true for
both launchers (processes started as scripts, or spawned)."""
from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

from gan_lab.build import build_model
from gan_lab.data.base import EpochSampler
from gan_lab.run import train
from tests.conftest import TINY, run_cli


class RankProbe(L.Callback):
    """Saves, per rank, the data indices served each epoch, the final weights and a noise draw."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self.indices: dict[int, list[int]] = {}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.indices[trainer.current_epoch] = [int(i) for i in trainer.train_dataloader.sampler]

    def on_train_end(self, trainer, pl_module) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        torch.save({
            "world_size": trainer.world_size,
            "indices": self.indices,
            "parameters": {k: v.detach().cpu().clone() for k, v in pl_module.named_parameters()},
            "noise": pl_module.noise.sample(4, "cpu"),
            "batches_seen": pl_module.batches_seen,
            "images_seen": pl_module.images_seen,
        }, self.dirpath / f"rank_{trainer.global_rank}.pt")


def ddp_cpu_run(run: Path, probe: Path) -> list[dict]:
    """A 2-process CPU DDP run of the real entry point; the per-rank probes."""
    res = run_cli(*TINY, "trainer=ddp_cpu", "model.generator.width=8", "model.discriminator.width=8",
                  "+callbacks.rank_probe._target_=tests.test_ddp.RankProbe",
                  f"+callbacks.rank_probe.dirpath={probe}", f"hydra.run.dir={run}", timeout=600)
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

    # the data is sharded: Lightning wraps the EpochSampler in a DistributedSampler (which for
    # training also permutes the positions, seeded with the run's seed and the epoch), so each
    # rank gets a disjoint share whose order is a function of (seed, epoch), new every epoch
    n = 1797 - round(1797 * 0.1)
    for epoch in (0, 1):
        shares = []
        for r in (0, 1):
            expected = DistributedSamplerWrapper(EpochSampler(n, seed=0), num_replicas=2, rank=r,
                                                 shuffle=True, seed=0)
            expected.set_epoch(epoch)
            assert ranks[r]["indices"][epoch] == list(expected)
            shares.append(set(ranks[r]["indices"][epoch]))
        assert shares[0] | shares[1] == set(range(n))
        assert len(shares[0] & shares[1]) == n % 2  # DistributedSampler pads odd sizes by one
    assert ranks[0]["indices"][0] != ranks[0]["indices"][1]

    # the run is reproducible: the same seed and world size give the same weights again
    again = ddp_cpu_run(tmp_path / "run_again", tmp_path / "probe_again")
    for key in p0:
        assert torch.equal(again[0]["parameters"][key], p0[key]), key
    assert torch.equal(again[1]["noise"], ranks[1]["noise"])


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
