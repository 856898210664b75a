"""Throughput benchmarks: ``python -m gan_lab.bench [train|data|all] [options] [config overrides]``.

``train``: the GAN module under a Lightning Trainer against a plain PyTorch loop of its own batch, alternated, on
synthetic uint8 data on the device; ``data``: an ImageDataModule serving batches. Tables are printed and appended to
``experiments/bench/README.md``; ``--profile N`` appends N profiled batches per loop to ``profiles.md`` beside it."""

from gan_lab.bench.cli import (COLUMNS, PROFILES_NAME, SUITES, main, parse_args, suite_jobs,
                               suite_rows)
from gan_lab.bench.plain import PlainLoop
from gan_lab.bench.timing import (SyntheticImages, bench_config, compare_rates, compose, fresh_model,
                                  one_epoch)

__all__ = ["COLUMNS", "PROFILES_NAME", "SUITES", "PlainLoop", "SyntheticImages", "bench_config", "compare_rates",
           "compose", "fresh_model", "main", "one_epoch", "parse_args", "suite_jobs", "suite_rows"]
