"""Mixed precision: the module's D and G updates are exactly those of a plain autocast loop."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from gan_lab import bench
from gan_lab.build import build_trainer

BATCHES, BATCH, SIZE = 3, 8, 16


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randint(0, 256, (BATCH, 3, SIZE, SIZE), dtype=torch.uint8, generator=g),
             torch.randint(0, 10, (BATCH,), generator=g)) for _ in range(BATCHES)]


def bench_cfg(model: str, precision: str, *overrides: str):
    args = bench.parse_args(["train", "--model", model, "--image-size", str(SIZE), "--batch-size", str(BATCH),
                             "--precision", precision, "--device", "cpu", "--output", "-", "noise.latent_dim=8",
                             *overrides])
    cfg = bench.bench_config(args)
    bench.one_epoch(cfg)  # as the bench's Lightning run (build_trainer gets no loggers)
    return cfg


def lightning_weights(cfg) -> dict[str, torch.Tensor]:
    model = bench.fresh_model(cfg, torch.device("cpu"))
    feed = bench.SyntheticImages(image_size=SIZE, batch_size=BATCH)
    feed.train_dataloader = lambda: DataLoader(batches(), batch_size=None)
    feed.setup = lambda stage=None: None
    torch.manual_seed(7)
    build_trainer(cfg, [], []).fit(model, datamodule=feed)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def plain_weights(cfg) -> dict[str, torch.Tensor]:
    model = bench.fresh_model(cfg, torch.device("cpu"))
    loop = bench.PlainLoop(model, cfg.trainer.precision, torch.device("cpu"))
    torch.manual_seed(7)
    loop.run(iter(DataLoader(batches(), batch_size=None)), warmup=0)  # the loader draws a seed, as in fit
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("model,precision,overrides", [
    ("dcgan", "bf16-mixed", ["model.generator.width=8", "model.discriminator.width=8"]),
    ("dcgan", "bf16-mixed", ["model.generator.width=8", "model.discriminator.width=8", "model.n_critic=2"]),
    ("wgan_gp", "bf16-mixed", ["model.generator.width=8", "model.discriminator.width=8", "model.n_critic=3"]),
    ("cdcgan", "bf16-mixed", ["model.generator.width=8", "model.discriminator.width=8"]),
    ("dcgan", "32", ["model.generator.width=8", "model.discriminator.width=8", "model.n_critic=2", "model.n_gen=2"]),
])
def test_module_updates_equal_plain_autocast_loop(model, precision, overrides):
    cfg = bench_cfg(model, precision, *overrides)
    ours, plain = lightning_weights(cfg), plain_weights(cfg)
    assert ours.keys() == plain.keys()
    different = [k for k in ours if not torch.equal(ours[k], plain[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
    start = bench.fresh_model(cfg, torch.device("cpu")).state_dict()
    assert any(not torch.equal(start[k], ours[k]) for k in ours if k.endswith("weight")), "nothing trained"


@pytest.mark.parametrize("model", ["artgan", "pggan", "cgan_mlp"])
def test_every_variant_trains_in_bf16_mixed(make_cfg, tmp_path, model):
    """The variants with their own loops (ArtGAN's pre-training and extra G step, PGGAN's growth and
    EMA, the dense cGAN) train under per-phase autocast: G and D updated, losses and weights finite."""
    import json

    from tests.test_host_sync import MODELS

    from gan_lab.run import train

    extra = ["model.pretrain_epochs=1", "model.extra_g_when=d_loss", "model.extra_g_threshold=1e9"] \
        if model == "artgan" else []
    cfg = make_cfg(*MODELS[model], *extra, "trainer.precision=bf16-mixed", "trainer.max_epochs=2",
                   "trainer.limit_train_batches=3", "trainer.log_every_n_steps=1")
    train(cfg)
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["status"] == "completed" and summary["batches_seen"] == 6
    losses = {k: v for k, v in summary["final"].items() if k.endswith("_loss")}
    assert {"train/d_loss", "train/g_loss"} <= set(losses)
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    if model == "artgan":  # the extra generator update ran under autocast too
        assert summary["final"]["train/extra_g_updates"] > 0
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
