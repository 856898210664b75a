"""The bench command in a tiny configuration, and the FastPath callback (channels_last, compile)."""
from __future__ import annotations

import re

import pytest
import torch

from gan_lab import bench
from gan_lab.callbacks.fast_path import compile_mode
from gan_lab.errors import UserError
from gan_lab.run import train
from tests.conftest import refused

TINY_BENCH = ["--image-size", "16", "--batch-size", "8", "--steps", "2", "--warmup", "1", "--repeats", "2",
              "--data-size", "16", "--data-images", "64", "noise.latent_dim=8", "model.generator.width=8",
              "model.discriminator.width=8"]


def table_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def number(cell: str) -> float:
    return float(cell.replace(",", ""))


def printed_error_names(capsys, *named: str) -> None:
    """What the bench printed on stderr (its one error line) names every string of ``named``."""
    err = capsys.readouterr().err
    assert all(n in err for n in named), err


def test_bench_prints_and_appends_a_table(tmp_path, capsys):
    out = tmp_path / "bench" / "README.md"
    assert bench.main(["all", *TINY_BENCH, "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = table_rows(printed)
    assert rows[0] == list(bench.COLUMNS) and set(rows[1]) == {"---"}
    train_row, data_row = rows[2], rows[3]
    assert train_row[0] == "train" and "dcgan-16, batch 8, 32-true" in train_row[1]
    gan_lab, plain, ratio = number(train_row[2]), number(train_row[3]), float(train_row[4])
    assert gan_lab > 0 and plain > 0 and ratio > 0
    assert data_row[0] == "data" and number(data_row[2]) > 0 and data_row[5] == ">= 20,000"
    assert re.search(r"^Machine: CPU .+ \(\d+ cores\), GPU none, torch ", printed, re.M)
    assert "Command: `python -m gan_lab.bench all" in printed
    written = out.read_text()
    assert written.startswith("# Benchmarks") and table_rows(written) == rows
    # a second run appends its own section
    assert bench.main(["data", *TINY_BENCH, "--output", str(out)]) == 0
    assert out.read_text().count("## ") == 2 and len(table_rows(out.read_text())) == 4 + 3


def test_ratio_is_the_median_of_paired_repetitions():
    """Repetition k of the module's loop is compared with repetition k of the plain loop, measured next
    to it: here the plain loop's machine got slower and faster, the paired ratios are 0.25, 2 and 1.5."""
    ours = [(100, 1.0), (100, 0.5), (300, 1.0)]    # 100, 200, 300 images/s
    plain = [(400, 1.0), (100, 1.0), (400, 2.0)]   # 400, 100, 200 images/s
    assert bench.compare_rates(ours, plain) == (200.0, 200.0, 1.5)  # not the ratio of the medians (1.0)
    assert bench.compare_rates([(64, 0.5)], [(64, 0.5)]) == (128.0, 128.0, 1.0)
    with pytest.raises(ValueError, match="as many timings"):
        bench.compare_rates(ours, plain[:2])


def test_bench_mixed_precision_channels_last(capsys):
    assert bench.main(["train", *TINY_BENCH, "--precision", "bf16-mixed", "--channels-last", "--output", "-"]) == 0
    row = table_rows(capsys.readouterr().out)[2]
    assert "bf16-mixed, channels_last on, compile off, cpu" in row[1] and float(row[4]) > 0


def test_bench_profile_counts_each_loops_ops_per_batch(tmp_path, capsys):
    """``--profile``: both loops' ops per batch, from torch.profiler, in profiles.md next to the table.
    A batch runs G once and D three times (real and fake for D's update, fake again for G's), in both
    loops, so the convolutions per batch are the nets' own counts times those passes."""
    out = tmp_path / "bench" / "README.md"
    assert bench.main(["train", *TINY_BENCH, "--steps", "3", "--profile", "3", "--output", str(out)]) == 0
    text = (tmp_path / "bench" / bench.PROFILES_NAME).read_text()
    assert text.startswith("# Profiles") and "\nMachine: CPU " in text and "--profile 3" in text
    assert re.search(r"^### dcgan-16, batch 8, 32-true.*\n\nPer batch, over 3 batches: gan_lab [\d.]+ ms wall, "
                     r"[\d.]+ ms of it in host ops \(\d+ ops\); plain loop [\d.]+ ms wall", text, re.M)
    assert "device busy" not in text  # no kernels on a CPU
    rows = {row[0]: row for row in table_rows(text)[2:]}
    model = bench.fresh_model(bench.bench_config(bench.parse_args(["train", *TINY_BENCH])), torch.device("cpu"))
    g_convs = sum(isinstance(m, torch.nn.ConvTranspose2d) for m in model.generator.modules())
    d_convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.discriminator.modules())
    assert g_convs >= 2 and d_convs >= 2
    for calls in (1, 3):  # gan_lab, plain
        assert float(rows["aten::conv_transpose2d"][calls]) == g_convs
        assert float(rows["aten::conv2d"][calls]) == 3 * d_convs
        # D's update goes back through D's two passes, G's update through D's third pass and through G
        assert float(rows["aten::convolution_backward"][calls]) == 3 * d_convs + g_convs
    assert "### dcgan-16" in capsys.readouterr().out
    assert table_rows(out.read_text())[2][0] == "train"  # the table itself is unchanged


TINY_PGGAN = ["--model", "pggan", "--image-size", "16", "--batch-size", "4", "--steps", "2", "--warmup", "1",
              "--repeats", "1", "model.generator.fmap_base=64", "model.discriminator.fmap_base=64",
              "model.generator.fmap_max=8", "model.discriminator.fmap_max=8"]


def test_bench_holds_a_growing_model_at_one_phase(tmp_path, capsys):
    """``--phase 8 --alpha 0.5``: both loops train PGGAN on 8x8 images halfway through the fade-in, so
    each runs the previous resolution's to_rgb/from_rgb too: more convolutions than once grown in."""
    convs = {}
    for alpha in ("0.5", "1"):
        out = tmp_path / alpha / "README.md"
        assert bench.main(["train", *TINY_PGGAN, "--phase", "8", "--alpha", alpha, "--profile", "2",
                           "--output", str(out)]) == 0
        row = table_rows(out.read_text())[2]
        assert row[1].startswith(f"pggan-16 at 8x8 alpha {alpha}, batch 4, 32-true") and float(row[4]) > 0
        ops = {r[0]: r for r in table_rows((out.parent / bench.PROFILES_NAME).read_text())[2:]}
        assert float(ops["aten::conv2d"][1]) == float(ops["aten::conv2d"][3])  # gan_lab, plain
        convs[alpha] = float(ops["aten::conv2d"][1])
    assert convs["0.5"] > convs["1"]
    capsys.readouterr()
    assert bench.main(["train", *TINY_PGGAN, "--output", "-"]) == 2
    printed_error_names(capsys, "model=pggan", "callbacks.growth", "--phase 16")
    assert bench.main(["train", *TINY_PGGAN, "--phase", "32", "--output", "-"]) == 2
    printed_error_names(capsys, "resolution=32", "4 and 16")
    assert bench.main(["train", *TINY_PGGAN, "--phase", "8", "--alpha", "1.5", "--output", "-"]) == 2
    assert "--alpha 1.5 must lie in [0, 1]" in capsys.readouterr().err
    assert bench.main(["train", *TINY_BENCH, "--phase", "8", "--output", "-"]) == 2
    printed_error_names(capsys, "--phase 8", "model=dcgan", "drop --phase")


def test_bench_user_errors(capsys):
    assert bench.main(["train", "--compile", "fastest", "--output", "-"]) == 2
    assert "compile='fastest' is unknown" in capsys.readouterr().err
    assert bench.main(["train", "--steps", "5", "--profile", "6", "--output", "-"]) == 2
    printed_error_names(capsys, "--profile 6", "--steps 5")
    assert bench.main(["train", "--cuda-graph", "--device", "cpu", "--output", "-"]) == 2
    printed_error_names(capsys, "--cuda-graph", "--device cuda")
    with pytest.raises(SystemExit):
        bench.main(["train", "--precision", "64"])
    assert compile_mode("false") is None and compile_mode(True) == "default"
    with pytest.raises(UserError):
        compile_mode("fast")


def test_channels_last_training(make_cfg, tmp_path):
    cfg = make_cfg("callbacks.fast_path.channels_last=true", "model.generator.width=8", "model.discriminator.width=8",
                   "trainer.max_epochs=1")
    train(cfg)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    kernels = [v for v in state["state_dict"].values() if v.dim() == 4]  # every convolution of G and D
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in kernels)
    assert sum(not w.is_contiguous() for w in kernels) >= 4  # NHWC (a single-channel kernel is both)
    assert all(torch.isfinite(w).all() for w in kernels)
    assert state["gan_lab"]["batches_seen"] == 3


@pytest.mark.slow
def test_compiled_nets_train_and_keep_state_dict_keys(make_cfg, tmp_path):
    cfg = make_cfg("callbacks.fast_path.compile=default", "model.generator.width=4", "model.discriminator.width=4",
                   "data.image_size=16", "trainer.max_epochs=1", "trainer.limit_train_batches=2")
    train(cfg)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert not any("_orig_mod" in k for k in state["state_dict"])
    assert any(k.startswith("generator.") for k in state["state_dict"]) and state["gan_lab"]["batches_seen"] == 2


def test_bench_suite_reports_every_row_and_goes_on_after_a_failure(tmp_path, capsys, monkeypatch):
    tiny = " ".join(TINY_BENCH[:-3])  # image, batch, steps, data sizes (no config overrides)
    monkeypatch.setitem(bench.SUITES, "cpu", [
        f"train {tiny} noise.latent_dim=8 model.generator.width=8 model.discriminator.width=8 --epoch-images 1000",
        f"train {tiny} --model pggan --image-size 12",  # refused when its config is built: a failed row
        f"data {tiny} --on-device",
        f"train {tiny} --callbacks run noise.latent_dim=8 model.generator.width=8 model.discriminator.width=8",
    ])
    out = tmp_path / "README.md"
    assert bench.main(["suite", "--device", "cpu", "--repeats", "1", "--output", str(out)]) == 0
    rows = table_rows(out.read_text())[2:]
    assert [r[0] for r in rows] == ["train", "train", "data", "train"]
    assert "with the run's callbacks and loggers (csv)" in rows[3][1] and float(rows[3][4]) > 0
    assert "epoch of 1,000 images:" in rows[0][1] and float(rows[0][4]) > 0
    assert rows[1][2].startswith("failed: UserError") and "--model pggan --image-size 12" in rows[1][1]
    assert "held on the device" in rows[2][1] and number(rows[2][2]) > 0
    assert table_rows(capsys.readouterr().out)[2:] == rows


def test_bench_suites_parse(capsys):
    args = bench.parse_args(["suite", "--device", "cpu", "--output", "-"])
    assert len(bench.suite_jobs(args)) == len(bench.SUITES["cpu"])
    for row in bench.SUITES["cuda"]:  # the GPU rows are valid options (checked here with the CPU)
        options = row.split()
        if "--cuda-graph" in options:  # a GPU-only option: refused on the CPU, parsed without it
            with refused("--cuda-graph", "--device cuda"):
                bench.parse_args([*options, "--device", "cpu"])
            options.remove("--cuda-graph")
        parsed = bench.parse_args([*options, "--device", "cpu"])
        assert parsed.what in ("train", "data")
        if parsed.what == "train":  # the model config composes with these options
            assert bench.bench_config(parsed).model._target_.startswith("gan_lab.models.")
    assert bench.suite_rows("0-1,3", 5) == [0, 1, 3] and bench.suite_rows(None, 2) == [0, 1]
    for bad in ("7", "a-b", "2-1", ""):
        with refused(f"--rows {bad} ", "--list"):
            bench.suite_rows(bad, 5)
    chosen = bench.suite_jobs(bench.parse_args(["suite", "--device", "cpu", "--rows", "4-5"]))
    assert [job.what for job in chosen] == ["data", "data"] and chosen[1].on_device
    assert bench.main(["suite", "--list", "--device", "cuda"]) == 0  # listing needs no GPU
    assert capsys.readouterr().out.splitlines()[0].startswith("  0  train --model dcgan")
    with refused("noise.latent_dim=8", "python -m gan_lab.bench train"):
        bench.suite_jobs(bench.parse_args(["suite", "--device", "cpu", "noise.latent_dim=8"]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bench_profiles_the_device_and_times_captured_pggan(tmp_path):
    """On a GPU: the profile counts the device's kernels and busy time (eager loops), and PGGAN held in
    a fade-in runs captured in both loops."""
    out = tmp_path / "README.md"
    assert bench.main(["train", *TINY_BENCH, "--device", "cuda", "--steps", "4", "--profile", "2",
                       "--output", str(out)]) == 0
    text = (tmp_path / bench.PROFILES_NAME).read_text()
    found = re.search(r"gan_lab [\d.]+ ms wall, [\d.]+ ms of it in host ops \(\d+ ops\), device busy ([\d.]+) ms "
                      r"\((\d+) kernels and copies\)", text)
    assert found and float(found.group(1)) > 0 and int(found.group(2)) > 10
    assert bench.main(["train", *TINY_PGGAN, "--device", "cuda", "--phase", "8", "--alpha", "0.5", "--cuda-graph",
                       "--warmup", "4", "--steps", "4", "--output", str(out)]) == 0
    row = table_rows(out.read_text())[-1]
    assert "pggan-16 at 8x8 alpha 0.5" in row[1] and "one CUDA graph per batch" in row[1] and float(row[4]) > 0



@pytest.mark.parametrize("extra,what", [(["d_augment=ada"], "d_augment=ada"),
                                        (["model=artgan", "model.extra_g_when=d_loss", "model.extra_g_threshold=0.3"],
                                         "model.extra_g_when")])
def test_the_bench_refuses_what_its_captured_plain_twin_cannot_reproduce(extra, what):
    args = bench.parse_args(["train", "--image-size", "16", "--batch-size", "8", "--device", "cpu", "--output", "-",
                             *extra])
    bench.bench_config(args)  # eager: both loops run the module's updates
    args.cuda_graph = True  # as --cuda-graph sets it on a GPU
    with refused("--cuda-graph", what):
        bench.bench_config(args)


@pytest.mark.parametrize("extra", [["--model", "dcgan", "d_augment=ada", "d_augment.interval=1"],
                                   ["--model", "artgan", "model.extra_g_when=d_adv_loss", "model.extra_g_threshold=9"]])
def test_the_plain_loop_runs_the_modules_host_decisions(extra, capsys):
    """The plain loop runs the module's batch, ADA's adaptation and ArtGAN's extra G step included."""
    assert bench.main(["train", *TINY_BENCH, *extra, "--output", "-"]) == 0
    row = table_rows(capsys.readouterr().out)[2]
    assert float(row[3].replace(",", "")) > 0 and float(row[4]) > 0


def test_the_bench_leaves_no_run_directory_behind():
    """Every composed bench config has a throwaway run directory, removed when the process ends."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("from gan_lab import bench; import os; cfg = bench.compose(['model=dcgan']); "
            "assert os.path.isdir(cfg.run_dir); print(cfg.run_dir)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    run_dir = Path(done.stdout.strip().splitlines()[-1])
    assert run_dir.name.startswith("gan_lab_bench_") and not run_dir.exists()


def test_the_plain_loop_runs_the_modules_updates_under_its_precisions_per_phase_autocast():
    args = bench.parse_args(["train", "--image-size", "16", "--batch-size", "8", "--device", "cpu", "--output", "-",
                             "--precision", "bf16-mixed"])
    module = bench.fresh_model(bench.bench_config(args), torch.device("cpu"))
    assert not torch.is_autocast_enabled("cpu")
    with module.autocast():
        assert not torch.is_autocast_enabled("cpu")  # no Trainer and no loop: full precision
    bench.PlainLoop(module, "bf16-mixed", torch.device("cpu"))
    with module.autocast():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")
