"""evaluate and generate on short digits runs: the python functions, the CLI and the training callback."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from PIL import Image

from gan_lab.errors import UserError
from gan_lab.evaluate import evaluate
from gan_lab.generate import class_blend, class_sweep, generate, interpolation_frames, sample_images
from gan_lab.metrics.sampling import ema_weights
from gan_lab.run import train
from gan_lab.runs import load_run
from tests.conftest import CONF, TINY, compose_config, refused, run_main
from tests.test_host_sync import MODELS as TINY_NETS


def compose_entry(name: str, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("extractors")


def small_eval(run_dir, cache, *overrides):
    """An evaluation small enough for a test: few images, a domain extractor of 20 steps."""
    return ["run_dir=" + str(run_dir), "num_samples=120", "evaluator.parzen_samples=150",
            "evaluator.num_real=400", "evaluator.kid_subsets=5", "evaluator.extractor.steps=20",
            "evaluator.extractor.kind=domain", f"evaluator.extractor.cache_dir={cache}", *overrides]


def write_run_config(cfg, run_dir) -> None:
    """What Hydra writes for a CLI run (unresolved, with its ``${hydra:...}`` keys), for runs trained
    in-process; written before training, as Hydra does (training publishes data facts into cfg)."""
    saved = cfg.copy()
    saved.run_dir, saved.run_name = "${hydra:runtime.output_dir}", "${hydra:runtime.choices.model}-digits"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(saved))


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("digits") / "run"
    cfg = compose_config([*TINY], run_dir)
    write_run_config(cfg, run_dir)
    train(cfg)
    return run_dir


def test_evaluate_end_to_end_on_a_digits_run(digits_run, cache):
    record = evaluate(compose_entry("evaluate", *small_eval(digits_run, cache)))
    data = json.loads((digits_run / "metrics.json").read_text())
    assert data["status"] == "completed" and data["evaluations"][-1] == record  # merged, not clobbered
    assert record["checkpoint"].endswith("last.ckpt") and record["batches_seen"] == 6
    assert record["epoch"] == 2  # epochs completed when the checkpoint was written (as during training)
    res = record["results"]
    for name in ("fid", "kid", "is", "memorisation"):
        assert res[name]["num_generated"] == 120 and res[name]["extractor"].startswith("classifier-digits-32px")
        assert len(res[name]["extractor_checksum"]) == 16 and "extractor_val_accuracy" in res[name]
    assert res["fid"]["num_real"] == 400 and res["fid"]["split"] == "train" and res["fid"]["value"] > 0
    assert res["fid"]["real_chosen"] == "400 of 1617 at random (seed 0)"
    assert res["parzen"]["num_generated"] == 150 and res["parzen"]["split"] == "val: 90 of 180 at random (seed 0)"
    assert res["parzen"]["sigma_split"] == "val: the other 90" and res["parzen"]["stderr"] > 0
    assert res["accuracy"] == {"skipped": "the model is not class-conditional"}
    assert 0 <= res["scores"]["d_real"] <= 1 and res["scores"]["num_real"] == 120
    out = digits_run / "evaluation" / "last"
    for picture in ("neighbours_pixel.png", "neighbours_feature.png", "scores.png"):
        assert (out / picture).is_file()
    grid = Image.open(out / "neighbours_pixel.png")
    assert grid.width > grid.height / 8 * 5  # 8 rows of 1 generated + 5 neighbours
    # the same protocol and seed give the same numbers
    again = evaluate(compose_entry("evaluate", *small_eval(digits_run, cache, "metrics=[fid,parzen]")))
    assert again["results"]["fid"]["value"] == pytest.approx(res["fid"]["value"], rel=1e-5)
    assert again["results"]["parzen"]["value"] == pytest.approx(res["parzen"]["value"], rel=1e-9)


def test_interpolation_endpoints_equal_the_endpoint_samples(digits_run):
    model = load_run(digits_run, ckpt="last.ckpt", device="cpu").model  # a name in <run>/checkpoints
    for mode in ("linear", "spherical"):
        frames = interpolation_frames(model, [3, 7, 11], steps=5, mode=mode)
        assert frames.shape[0] == 9
        for position, seed in ((0, 3), (4, 7), (8, 11)):
            assert torch.allclose(frames[position], sample_images(model, 1, seed)[0], atol=1e-5)
        assert not torch.allclose(frames[1], frames[0], atol=1e-4)


def test_generate_writes_grids_pngs_and_gifs(digits_run, tmp_path):
    out = tmp_path / "gen"
    written = generate(compose_entry("generate", f"run_dir={digits_run}", f"out_dir={out}", "num_samples=9",
                                     "individual=true", "interpolation.seeds=[0,1,2]", "interpolation.steps=4"))
    assert len(list((out / "images").glob("*.png"))) == 9
    assert Image.open(out / "samples.png").size == (3 * 66 + 2, 3 * 66 + 2)  # 3x3 grid of 64px images
    gif = Image.open(written["interpolation_spherical_gif"])
    assert gif.n_frames == 7 + 5  # 7 frames forward, then back without repeating the ends
    assert (out / "interpolation_linear.png").is_file() and (out / "interpolation_linear.gif").is_file()
    with refused("classes=[3]", "class-conditional"):
        generate(compose_entry("generate", f"run_dir={digits_run}", "classes=[3]"))


def test_conditional_model_generation_and_accuracy(tmp_path, cache):
    run_dir = tmp_path / "cond"
    overrides = [*TINY, "model=cdcgan", "model.generator.width=8", "model.discriminator.width=8",
                 "trainer.max_epochs=1", "trainer.limit_train_batches=2"]
    cfg = compose_config(overrides, run_dir)
    write_run_config(cfg, run_dir)
    train(cfg)
    loaded = load_run(run_dir, device="cpu")
    assert loaded.model.conditional
    written = generate(compose_entry("generate", f"run_dir={run_dir}", "classes=[3,'7']", "per_class=4",
                                     "interpolation.seeds=[0,1]", "interpolation.modes=[linear]",
                                     "interpolation.rows=2"))
    assert {"samples", "interpolation_linear", "classes", "classes_gif", "class_blend", "class_blend_gif"} <= set(written)
    assert Image.open(written["classes_gif"]).n_frames == 2
    assert Image.open(written["class_blend_gif"]).n_frames == 8 + 6  # 3 -> 7 in 8 frames, forth and back
    # the blend's ends are the classes' own samples at the same latents; in between it is neither
    model = loaded.model
    blend, frames = class_blend(model, [3, 7], steps=5, rows=2, seed=0, num_classes=10)
    sweep = class_sweep(model, [3, 7], rows=2, seed=0)
    assert frames == 5 and blend.shape[0] == 10

    def apart(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).abs().max())

    for row in (0, 1):
        between_classes = apart(sweep[row * 2], sweep[row * 2 + 1])  # a nearly untrained G: small images
        assert between_classes > 0
        assert apart(blend[row * 5], sweep[row * 2]) <= 1e-3 * between_classes
        assert apart(blend[row * 5 + 4], sweep[row * 2 + 1]) <= 1e-3 * between_classes
        middle = blend[row * 5 + 2]
        assert min(apart(middle, sweep[row * 2]), apart(middle, sweep[row * 2 + 1])) > 0.1 * between_classes
    record = evaluate(compose_entry("evaluate", *small_eval(run_dir, cache, "metrics=[accuracy]", "num_samples=40")))
    acc = record["results"]["accuracy"]
    assert set(acc["per_class"]) == {str(c) for c in range(10)} and acc["per_class_generated"] == 4
    assert 0 <= acc["value"] <= 1 and acc["extractor"].startswith("classifier-digits")


def test_ema_generator_is_used_when_the_model_keeps_one(digits_run):
    model = load_run(digits_run, device="cpu").model
    live = sample_images(model, 4, seed=0)
    model.generator_ema = torch.nn.Sequential(torch.nn.Linear(16, 1), torch.nn.Unflatten(1, (1, 1, 1)),
                                              torch.nn.Upsample(size=32))
    with ema_weights(model) as which:
        ema = sample_images(model, 4, seed=0)
    assert which == "ema" and ema.shape == live.shape and not torch.allclose(ema, live)
    assert torch.allclose(sample_images(model, 4, seed=0), ema)  # the module samples from its EMA
    with ema_weights(model, enabled=False) as which:  # ema=false: the live generator
        assert which == "live" and torch.allclose(sample_images(model, 4, seed=0), live)
    assert torch.allclose(sample_images(model, 4, seed=0), ema)  # and the EMA is back after


def test_metrics_callback_logs_val_metrics_for_sweeps(make_cfg, tmp_path, cache):
    cfg = make_cfg("callbacks=with_metrics", "callbacks.metrics.every_n_epochs=1",
                   "callbacks.metrics.evaluator.metrics=[fid,parzen]", "callbacks.metrics.evaluator.num_samples=100",
                   "callbacks.metrics.evaluator.parzen_samples=100", "callbacks.metrics.evaluator.num_real=300",
                   "callbacks.metrics.evaluator.extractor.steps=20", "callbacks.metrics.evaluator.extractor.kind=domain",
                   f"callbacks.metrics.evaluator.extractor.cache_dir={cache}", "optimized_metric=val/fid")
    value = train(cfg)
    data = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert data["status"] == "completed" and [e["epoch"] for e in data["evaluations"]] == [1, 2]
    assert value == pytest.approx(data["evaluations"][-1]["results"]["fid"]["value"], rel=1e-5)
    assert data["final"]["val/parzen_ll"] == pytest.approx(data["evaluations"][-1]["results"]["parzen"]["value"])


def test_without_an_epoch_limit_metrics_and_grids_come_every_n_epochs_and_at_the_end(make_cfg, tmp_path, cache):
    """trainer.max_epochs=-1 (a length in batches): evaluations and sample grids every 2 epochs and after
    the last batch, not after every epoch."""
    cfg = make_cfg("callbacks=with_metrics", "callbacks.metrics.every_n_epochs=2", "trainer.max_epochs=-1",
                   "callbacks.sample_grid.every_n_epochs=2",
                   "trainer.limit_train_batches=2", "trainer.max_batches=9", "callbacks.metrics.evaluator.metrics=[fid]",
                   "callbacks.metrics.evaluator.num_samples=50", "callbacks.metrics.evaluator.num_real=100",
                   "callbacks.metrics.evaluator.extractor.steps=20", "callbacks.metrics.evaluator.extractor.kind=domain",
                   f"callbacks.metrics.evaluator.extractor.cache_dir={cache}")
    train(cfg)
    data = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [e["batches_seen"] for e in data["evaluations"]] == [4, 8, 9]
    grids = sorted(p.name for p in (tmp_path / "run" / "samples").glob("*.png"))
    assert grids == ["epoch_0001.png", "epoch_0003.png", "epoch_0004.png", "final.png"]


#: the models whose D says a probability of being real; the others are critics (any real number)
PROBABILITY_MODELS = {"dcgan", "cdcgan", "cgan_mlp", "artgan"}


@pytest.mark.parametrize("model", ["dcgan", "cdcgan", "cgan_mlp", "artgan", "wgan_gp", "pggan"])
def test_scores_of_every_model_are_one_verdict_per_image(model, tmp_path):
    """``metrics=[scores]`` on a run of each real model (2 batches of tiny nets; PGGAN still at 4x4):
    one D verdict per held-out image and per generated image, in the model's range, and the record's
    D(x) is the mean of those verdicts."""
    run_dir = tmp_path / model
    cfg = compose_config([*TINY, *TINY_NETS[model], "data.batch_size=8", "trainer.max_epochs=1",
                          "trainer.limit_train_batches=2", "callbacks.sample_grid=null",
                          "callbacks.training_curves=null"], run_dir)
    write_run_config(cfg, run_dir)
    train(cfg)
    record = evaluate(compose_entry("evaluate", f"run_dir={run_dir}", "metrics=[scores]", "num_samples=24"))
    res = record["results"]["scores"]
    assert res["num_real"] == 24 and res["num_generated"] == 24  # images, not D outputs (ArtGAN has K+1)
    assert res["real_chosen"] == "24 of 180 at random (seed 0)"

    loaded = load_run(run_dir, device="cpu")
    size = loaded.model.sample(n=1).shape[-1]  # the generator's resolution, which the real images are brought to
    val = loaded.datamodule.dataset("val")
    rows = torch.randperm(180, generator=torch.Generator().manual_seed(0))[:24].sort().values  # the 24 of 180 of seed 0, in order
    images = val.images[rows].float()
    if images.shape[-1] != size:
        images = F.adaptive_avg_pool2d(images, size).round()
    with torch.no_grad():
        verdicts = loaded.model.eval().d_scores(images / 127.5 - 1, val.labels[rows])
    assert verdicts.shape == (24,) and torch.isfinite(verdicts).all()
    assert res["d_real"] == pytest.approx(float(verdicts.mean()), rel=1e-4, abs=1e-6)
    if model in PROBABILITY_MODELS:
        assert verdicts.min() >= 0 and verdicts.max() <= 1 and 0 <= res["d_fake"] <= 1
    assert all(map(math.isfinite, (res["d_real"], res["d_fake"])))


def test_entry_points_report_a_missing_run_in_one_line(tmp_path, capsys):
    res = run_main("gan_lab.evaluate", f"run_dir={tmp_path / 'nowhere'}", capsys=capsys)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "has no .hydra/config.yaml" in res.stderr and "Traceback" not in res.stderr
    for entry, name in ((evaluate, "evaluate"), (generate, "generate")):
        with pytest.raises(UserError, match="run_dir is not set"):
            entry(compose_entry(name))
