"""Multiruns through the real entry point, the report, and an Optuna sweep."""
from __future__ import annotations

from tests.conftest import TINY, run_cli

FAST = [*TINY, "trainer.max_epochs=1", "trainer.limit_train_batches=2", "model.generator.width=4",
        "model.discriminator.width=4"]


def test_multirun_report_one_row_per_setting_seeds_aggregated(tmp_path):
    sweep = tmp_path / "sweep"
    res = run_cli("-m", *FAST, "noise=uniform,normal", "seed=0,1", f"hydra.sweep.dir={sweep}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "2", "3"]
    res = run_cli(str(sweep), module="gan_lab.report")
    assert res.returncode == 0, res.stderr[-3000:]
    text = (sweep / "report" / "README.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    header, body = rows[0], rows[1:]
    assert header.startswith("| noise | seeds | status | train/d_loss | train/g_loss")
    assert sorted(r.split(" | ")[0] for r in body) == ["| normal", "| uniform"]
    assert all(r.split(" | ")[1] == "2" and "±" in r for r in body)  # two seeds, mean ± std
    for png in ("curves.png", "samples.png"):
        assert (sweep / "report" / png).is_file()


def test_report_metric_vs_numeric_parameter(tmp_path):
    sweep = tmp_path / "sweep"
    res = run_cli("-m", *FAST, "noise.latent_dim=4,8", f"hydra.sweep.dir={sweep}")
    assert res.returncode == 0, res.stderr[-3000:]
    res = run_cli(str(sweep), module="gan_lab.report")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (sweep / "report" / "metric_vs_noise_latent_dim.png").is_file()


def test_report_of_a_missing_folder_is_one_line(tmp_path):
    res = run_cli(str(tmp_path / "nope"), module="gan_lab.report")
    assert res.returncode == 2 and "does not exist" in res.stderr and "Traceback" not in res.stderr


def test_optuna_sweep_two_trials(tmp_path):
    sweep = tmp_path / "optuna"
    res = run_cli("-m", *FAST, "hparams_search=optuna", "hydra.sweeper.n_trials=2",
                  "hydra.sweeper.sampler.n_startup_trials=2", "optimized_metric=train/d_loss", "callbacks=default",
                  f"hydra.sweep.dir={sweep}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (sweep / "optimization_results.yaml").is_file()
    lrs = {(sweep / str(i) / ".hydra" / "overrides.yaml").read_text() for i in (0, 1)}
    assert len(lrs) == 2  # two different sampled settings
