"""Multiruns through the real entry point, the report, and an Optuna sweep."""
from __future__ import annotations

import csv
import json

import pytest
import yaml

from gan_lab.report import main as report_main
from tests.conftest import TINY, one_error_line, run_cli, run_main

FAST = [*TINY, "trainer.max_epochs=1", "trainer.limit_train_batches=2", "model.generator.width=4",
        "model.discriminator.width=4"]


def test_multirun_report_one_row_per_setting_seeds_aggregated(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    res = run_main("gan_lab.run", "-m", *FAST, "noise=uniform,normal", "seed=0,1", f"hydra.sweep.dir={sweep}",
                   capsys=capsys)
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "2", "3"]
    assert report_main([str(sweep)]) == 0, capsys.readouterr().err[-3000:]
    text = (sweep / "report" / "README.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    header, body = rows[0], rows[1:]
    assert header.startswith("| noise | seeds | status | train/d_loss (final) | train/d_loss (mean) | "
                             "train/g_loss (final) | train/g_loss (mean)")
    assert sorted(r.split(" | ")[0] for r in body) == ["| normal", "| uniform"]
    assert all(r.split(" | ")[1] == "2" and "±" in r for r in body)  # two seeds, mean ± std
    for png in ("curves.png", "samples.png"):
        assert (sweep / "report" / png).is_file()


CSV_HEADER = ["epoch", "lr/discriminator", "lr/generator", "step", "train/batches_seen", "train/d_fake",
              "train/d_loss", "train/d_real", "train/g_loss", "train/images_seen"]


def write_run(path, overrides: list[str], g_loss: list[float], d_real: list[float]) -> None:
    """A run directory as gan_lab.run leaves it: overrides, metrics.json and the CSV logger's
    metrics.csv (a learning-rate row without training values, then one row per logging step)."""
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    rows = [{"epoch": "", "lr/discriminator": 0.0002, "lr/generator": 0.0002, "step": 0}]
    for i, (g, r) in enumerate(zip(g_loss, d_real)):
        rows.append({"epoch": 0, "step": i, "train/batches_seen": i + 1, "train/images_seen": 64 * (i + 1),
                     "train/g_loss": g, "train/d_real": r, "train/d_loss": 1.0, "train/d_fake": 0.5})
    with open(path / "metrics.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, CSV_HEADER)
        writer.writeheader()
        writer.writerows(rows)
    final = {"train/g_loss": g_loss[-1], "train/d_real": d_real[-1], "train/d_loss": 1.0, "train/d_fake": 0.5,
             "train/batches_seen": float(len(g_loss))}
    (path / "metrics.json").write_text(json.dumps({"status": "completed", "final": final}))


def test_report_shows_the_mean_over_training_beside_the_final_value(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    write_run(sweep / "0", ["noise=uniform", "seed=0"], g_loss=[1.0, 2.0, 3.0], d_real=[0.9, 0.8, 0.7])
    write_run(sweep / "1", ["noise=uniform", "seed=1"], g_loss=[3.0, 4.0, 5.0], d_real=[0.5, 0.5, 0.5])
    write_run(sweep / "2", ["noise=normal", "seed=0"], g_loss=[6.0, 7.4], d_real=[0.2, 0.4])
    assert report_main([str(sweep)]) == 0
    shown = capsys.readouterr().out
    text = (sweep / "report" / "README.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert all(row in shown for row in rows)  # the table is printed too
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert header[:11] == ["noise", "seeds", "status", "train/d_loss (final)", "train/d_loss (mean)",
                           "train/g_loss (final)", "train/g_loss (mean)", "train/d_real (final)",
                           "train/d_real (mean)", "train/d_fake (final)", "train/d_fake (mean)"]
    assert "train/g_loss" not in header and "train/batches_seen" not in header
    table = {cells[0]: dict(zip(header, cells)) for cells in
             ([c.strip() for c in row.strip("|").split("|")] for row in rows[1:])}
    uniform, normal = table["uniform"], table["normal"]
    # g_loss: finals 3 and 5, means over training 2 and 4, aggregated over the two seeds
    assert uniform["train/g_loss (final)"] == "4 ± 1.4" and uniform["train/g_loss (mean)"] == "3 ± 1.4"
    assert uniform["train/d_real (final)"] == "0.6 ± 0.14" and uniform["train/d_real (mean)"] == "0.65 ± 0.21"
    assert normal["train/g_loss (final)"] == "7.4" and normal["train/g_loss (mean)"] == "6.7"
    assert normal["train/d_real (mean)"] == "0.3" and normal["seeds"] == "1"
    assert "`(mean)` columns" in text


def test_report_statistics_are_over_the_runs_that_finished(tmp_path):
    """Runs that diverged, were stopped by a signal or crashed are counted in `status` and left out of
    the mean ± std; a run that reached its time budget (trainer.max_time) is in it."""
    sweep = tmp_path / "sweep"
    for i, g in enumerate((1.0, 3.0, 5.0, float("nan"), 50.0)):
        write_run(sweep / str(i), ["noise=uniform", f"seed={i}"], g_loss=[g], d_real=[0.5])
    write_run(sweep / "5", ["noise=uniform", "seed=5"], g_loss=[1.0], d_real=[0.5])
    (sweep / "5" / "metrics.json").unlink()  # a run that crashed before writing its summary
    for i, status in ((2, {"status": "interrupted", "reason": "max_time"}), (3, {"status": "diverged"}),
                      (4, {"status": "interrupted", "signal": 15})):
        summary = json.loads((sweep / str(i) / "metrics.json").read_text())
        (sweep / str(i) / "metrics.json").write_text(json.dumps({**summary, **status}))
    report_main([str(sweep)])
    text = (sweep / "report" / "README.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    row = dict(zip(header, (c.strip() for c in rows[1].strip("|").split("|"))))
    assert row["seeds"] == "3"
    assert row["status"] == "2 completed, 1 completed (max_time), 1 diverged, 1 interrupted, 1 no metrics.json"
    assert row["train/g_loss (final)"] == "3 ± 2"  # seeds 0, 1 and 2: 1, 3 and 5


@pytest.mark.slow
def test_report_metric_vs_numeric_parameter(tmp_path):
    sweep = tmp_path / "sweep"
    res = run_cli("-m", *FAST, "noise.latent_dim=4,8", f"hydra.sweep.dir={sweep}")
    assert res.returncode == 0, res.stderr[-3000:]
    res = run_cli(str(sweep), module="gan_lab.report")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (sweep / "report" / "metric_vs_noise_latent_dim.png").is_file()


def test_report_of_a_missing_folder_is_one_line(tmp_path, capsys):
    assert report_main([str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_optuna_sweep_two_trials(tmp_path, capsys):
    sweep = tmp_path / "optuna"
    res = run_main("gan_lab.run", "-m", *FAST, "hparams_search=optuna", "hydra.sweeper.n_trials=2",
                   "hydra.sweeper.sampler.n_startup_trials=2", "optimized_metric=train/d_loss", "callbacks=default",
                   f"hydra.sweep.dir={sweep}", capsys=capsys)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (sweep / "optimization_results.yaml").is_file()
    lrs = {(sweep / str(i) / ".hydra" / "overrides.yaml").read_text() for i in (0, 1)}
    assert len(lrs) == 2  # two different sampled settings


def test_optuna_sweep_goes_on_past_failed_trials(tmp_path, capsys):
    """A trial that fails (here: it does not log the optimised metric) is recorded as the worst value for
    the direction, and the study goes on to its end; NaN would make Optuna end the sweep."""
    sweep = tmp_path / "optuna"
    res = run_main("gan_lab.run", "-m", *FAST, "hparams_search=optuna", "hydra.sweeper.n_trials=2",
                   "hydra.sweeper.sampler.n_startup_trials=2", "optimized_metric=val/fid", "callbacks=default",
                   f"hydra.sweep.dir={sweep}", capsys=capsys)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stderr.count("optimized_metric=val/fid is not among what this run's evaluations log") == 2
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == float("inf")


def test_report_shows_evaluations_under_their_logged_names(tmp_path):
    """Values of `gan_lab.evaluate` records appear as they are logged (val/parzen_ll, val/precision, ...),
    without per-class columns; a value the run logged itself (its `final`) is not replaced."""
    from gan_lab.report import find_runs

    sweep = tmp_path / "sweep"
    write_run(sweep / "0", ["noise=uniform"], g_loss=[1.0], d_real=[0.5])
    summary = json.loads((sweep / "0" / "metrics.json").read_text())
    summary["final"]["val/fid"] = 7.0
    results = {"fid": {"value": 5.0}, "kid": {"value": 0.1, "std": 0.01}, "parzen": {"value": -3.0, "stderr": 0.2},
               "precision_recall": {"precision": 0.4, "recall": 0.8, "k": 3},
               "density_coverage": {"skipped": "5 images in the smaller set; need more than k=5"},
               "accuracy": {"value": 0.9, "per_class": {"0": 1.0, "1": 0.8}},
               "scores": {"d_real": 0.7, "d_fake": 0.2}}
    summary["evaluations"] = [{"results": {"fid": {"value": 9.0}, "is": {"value": 2.0}}}, {"results": results}]
    (sweep / "0" / "metrics.json").write_text(json.dumps(summary))
    metrics = find_runs(sweep)[0].metrics
    assert {k: v for k, v in metrics.items() if k.startswith("val/")} == {
        "val/fid": 7.0, "val/is": 2.0, "val/kid": 0.1, "val/kid_std": 0.01, "val/parzen_ll": -3.0,
        "val/parzen_ll_stderr": 0.2, "val/precision": 0.4, "val/recall": 0.8, "val/class_accuracy": 0.9,
        "val/d_real": 0.7, "val/d_fake": 0.2}


def test_a_slurm_sweep_without_slurm_is_one_sentence_before_anything_is_written(tmp_path, capsys, monkeypatch):
    sweep = tmp_path / "sweep"
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch on the PATH
    res = run_main("gan_lab.run", "-m", "hydra/launcher=slurm", *FAST, "seed=0,1", f"hydra.sweep.dir={sweep}",
                   capsys=capsys)
    one_error_line(res, "hydra/launcher=slurm", "sbatch")
    assert not sweep.exists()


@pytest.mark.parametrize("timeout_min, signal_delay_s, left", [(1, 40, 20), (2, 120, 0), (3, 61, 119)])
def test_a_time_limit_that_warns_a_job_while_it_starts_is_refused(tmp_path, capsys, timeout_min, signal_delay_s, left):
    """SLURM may send the warning up to 60 s early: a job warned in its first seconds is killed by the
    signal before it can catch it."""
    sweep = tmp_path / "sweep"
    res = run_main("gan_lab.run", "-m", "hydra/launcher=slurm", *FAST, "seed=0,1", f"hydra.sweep.dir={sweep}",
                   f"hydra.launcher.timeout_min={timeout_min}", f"hydra.launcher.signal_delay_s={signal_delay_s}",
                   capsys=capsys)
    one_error_line(res, f"hydra.launcher.timeout_min={timeout_min}", f"signal_delay_s={signal_delay_s}",
                   f"warns a job {left} s after it starts", "at least 120 s")
    assert not sweep.exists()
