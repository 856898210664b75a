"""Throughput benchmarks: ``python -m gan_lab.bench [train|data|all] [options] [config overrides]``.

``train`` times the GAN module (built as ``gan_lab.run`` builds it) under a Lightning Trainer
against a plain PyTorch loop running the module's own batch (``GAN.updates``) with raw optimizers,
alternating repetitions in one process, on synthetic uint8 data held on the device (``--cuda-graph``:
both loops replay each batch as one CUDA graph). ``data`` measures how fast an
:class:`~gan_lab.data.base.ImageDataModule` serves batches from its in-memory uint8 images. Results
are printed as a markdown table and appended to ``experiments/bench/README.md``; ``train --profile N``
appends N profiled batches of each loop to ``experiments/bench/profiles.md``.
"""

from gan_lab.bench.cli import (COLUMNS, PROFILES_NAME, SUITES, main, parse_args, suite_jobs,
                               suite_rows)
from gan_lab.bench.plain import PlainLoop
from gan_lab.bench.timing import (SyntheticImages, bench_config, compare_rates, compose, fresh_model,
                                  one_epoch)

__all__ = ["COLUMNS", "PROFILES_NAME", "SUITES", "PlainLoop", "SyntheticImages", "bench_config", "compare_rates",
           "compose", "fresh_model", "main", "one_epoch", "parse_args", "suite_jobs", "suite_rows"]
