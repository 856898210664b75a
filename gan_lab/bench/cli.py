"""``python -m gan_lab.bench``: its options, the suites of tracked rows, and the markdown tables
it prints and appends."""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import os
import platform
import sys
import warnings
from pathlib import Path

import lightning as L
import torch

from gan_lab.bench.plain import PlainLoop
from gan_lab.bench.profiles import table_row
from gan_lab.bench.timing import bench_data, bench_train
from gan_lab.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUTPUT = ROOT / "experiments" / "bench" / "README.md"
PRECISIONS = {"32": "32-true", "32-true": "32-true", "bf16-mixed": "bf16-mixed", "16-mixed": "16-mixed"}
HEADER = ("# Benchmarks\n\nWritten by `python -m gan_lab.bench` (newest last). `train`: images/s of the "
          "gan_lab module under a Lightning Trainer and of a plain PyTorch loop doing the same D and G "
          "updates, measured alternately in one process (ratio = median of paired repetitions; goal "
          ">= 0.97). `data`: images/s served by an ImageDataModule from its in-memory uint8 images "
          "(goal >= 20,000 at 64x64 on 2 CPU cores).\n")
PROFILES_NAME = "profiles.md"
PROFILES_HEADER = ("# Profiles\n\nWritten by `python -m gan_lab.bench train --profile N` (newest last), next to the "
                   "benchmark table: after the timed repetitions, N batches of each loop under torch.profiler. "
                   "Per batch: wall time, the host time inside aten ops (the rest is Python: the loop, hooks, "
                   "logging), on a GPU the device's busy time and kernel count; then the ops that cost most, "
                   "each a top-level aten op (with the kernels it launched).\n")
COLUMNS = ("benchmark", "setting", "gan_lab (img/s)", "plain PyTorch (img/s)", "ratio", "goal")
TABLE_HEADER = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS)


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def section_header(command: str) -> str:
    """A report's heading: the time, the machine and the command."""
    when = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    return (f"## {when}\n\nMachine: CPU {cpu_name()} ({cores} cores), GPU {gpu}, torch {torch.__version__}, "
            f"lightning {L.__version__}, Python {platform.python_version()}\n\nCommand: `{command}`")


def reopened(path: Path, header: str) -> str:
    """The text of ``path`` (``header`` when there is none yet), ending in one blank line."""
    return (path.read_text() if path.is_file() else header).rstrip("\n") + "\n\n"


#: ``python -m gan_lab.bench suite``: the tracked rows per device, each the options of one benchmark
#: (they override the suite's own options).
SUITES: dict[str, list[str]] = {
    "cuda": [
        *(f"train --model dcgan --image-size 64 --batch-size {b} {opts}"
          for b in (128, 512)
          for opts in ("--precision 32",
                       "--precision bf16-mixed --channels-last",
                       "--precision bf16-mixed --channels-last "
                       "optimizer.discriminator.fused=true optimizer.generator.fused=true",
                       # as a training run has it: grids, checkpoints, curves, guard, progress bar, CSV
                       "--precision bf16-mixed --channels-last --callbacks run")),
        # a WikiArt-genre epoch: 45,503 images at 64x64, ArtGAN
        # profiled (--profile: profiles.md): where ArtGAN's bf16 time goes, against fp32 and the plain loop
        "train --model artgan --image-size 64 --batch-size 128 --precision 32 --epoch-images 45503 --profile 10",
        "train --model artgan --image-size 64 --batch-size 128 --precision bf16-mixed --channels-last "
        "--epoch-images 45503 --profile 10",
        "train --model artgan --image-size 64 --batch-size 512 --precision bf16-mixed --channels-last "
        "--epoch-images 45503",
        "data --data-size 64 --batch-size 128 --data-images 45503",
        "data --data-size 64 --batch-size 128 --data-images 45503 --on-device",
        # the whole batch as one CUDA graph, in both loops
        *(f"train --model dcgan --image-size 64 --batch-size {b} {opts} --cuda-graph"
          for b, opts in ((128, "--precision bf16-mixed --channels-last"), (512, "--precision bf16-mixed --channels-last"),
                          (128, "--precision 32"), (512, "--precision 32"),
                          (1024, "--precision bf16-mixed --channels-last"),
                          (512, "--precision bf16-mixed --channels-last "
                                "optimizer.discriminator.fused=true optimizer.generator.fused=true"))),
        *(f"train --model artgan --image-size 64 --batch-size {b} --precision bf16-mixed --channels-last "
          f"--cuda-graph --epoch-images 45503 --profile 10" for b in (128, 512)),
        # PGGAN with the Pokemon preset's nets (512-d latent), held halfway through a fade-in, eager then captured
        *(f"train --model pggan --image-size 128 --batch-size {b} --phase {r} --alpha 0.5{graph} noise.latent_dim=512"
          for b, r in ((4, 8), (4, 32), (2, 128)) for graph in ("", " --cuda-graph")),
        # compilation last: each row compiles both loops (minutes with max-autotune)
        *(f"train --model dcgan --image-size 64 --batch-size {b} --precision bf16-mixed {opts}"
          for b in (128, 512)
          for opts in ("--compile default", "--channels-last --compile default",
                       "--compile max-autotune-no-cudagraphs",
                       "--channels-last --compile default --cuda-graph")),
        "train --model artgan --image-size 64 --batch-size 128 --precision bf16-mixed "
        "--compile max-autotune-no-cudagraphs --epoch-images 45503",
    ],
    "cpu": [
        # the bundled-digits setting of `make run` (DCGAN-32, width 32, batch 64)
        "train --model dcgan --image-size 32 --batch-size 64 --steps 20 --warmup 3 "
        "noise.latent_dim=64 model.generator.width=32 model.discriminator.width=32",
        "train --model dcgan --image-size 32 --batch-size 64 --steps 20 --warmup 3 --callbacks run "
        "noise.latent_dim=64 model.generator.width=32 model.discriminator.width=32",
        "train --model dcgan --image-size 32 --batch-size 64 --steps 10 --warmup 2 --precision bf16-mixed "
        "noise.latent_dim=64 model.generator.width=32 model.discriminator.width=32",
        # tiny nets: the step is mostly Python, so this row shows the loop's own overhead
        "train --model dcgan --image-size 16 --batch-size 8 --steps 40 --profile 20 "
        "noise.latent_dim=16 model.generator.width=8 model.discriminator.width=8",
        "data --data-size 64 --batch-size 64",
        "data --data-size 64 --batch-size 64 --on-device",
    ],
}
SUITE_OPTIONS = ("--steps", "--warmup", "--repeats", "--num-workers")


def suite_jobs(args: argparse.Namespace) -> list[argparse.Namespace]:
    """The parsed options of every benchmark of the suite for ``args.device``."""
    if args.overrides:
        raise UserError(f"bench suite takes no config overrides (got {' '.join(args.overrides)}); "
                        f"run `python -m gan_lab.bench train ... <overrides>` for a single setting.")
    base = ["--device", args.device, "--output", "-"]
    for option in SUITE_OPTIONS:
        base += [option, str(getattr(args, option[2:].replace("-", "_")))]
    rows = SUITES[args.device]
    return [parse_args([*base, *rows[i].split()]) for i in suite_rows(args.rows, len(rows))]


def suite_rows(spec: str | None, n: int) -> list[int]:
    """Row numbers from ``--rows`` (``0-5,9``; all when ``None``)."""
    if spec is None:
        return list(range(n))
    chosen: list[int] = []
    try:
        for part in spec.split(","):
            first, _, last = part.partition("-")
            chosen += range(int(first), int(last or first) + 1)
    except ValueError:
        chosen = [-1]
    if not chosen or min(chosen) < 0 or max(chosen) >= n:
        raise UserError(f"--rows {spec} must list row numbers or ranges from 0 to {n - 1}, e.g. --rows 0-3,7 "
                        f"(--list shows them).")
    return chosen


def failed_row(args: argparse.Namespace, exc: Exception) -> list[str]:
    """A suite row for a benchmark that raised: its options and the error."""
    options = " ".join(a for a in args.argv if a not in ("--device", args.device, "--output", "-"))
    message = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return [args.what, options, f"failed: {type(exc).__name__}: {message}", "", "", ""]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m gan_lab.bench",
                                description=sys.modules["gan_lab.bench"].__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("what", nargs="?", default="all", choices=("train", "data", "all", "suite"),
                   help="suite: every tracked row for the device (see SUITES in gan_lab/bench/cli.py)")
    p.add_argument("overrides", nargs="*", help="config overrides for the train benchmark, e.g. noise.latent_dim=64")
    p.add_argument("--model", default="dcgan", help="a config of conf/model/")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precision", default="32", choices=sorted(PRECISIONS))
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", default="false", help="false | default | max-autotune-no-cudagraphs")
    p.add_argument("--cuda-graph", action="store_true",
                   help="train benchmark: callbacks.fast_path.cuda_graph=true, and the plain loop captured alike")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    p.add_argument("--steps", type=int, default=50, help="timed batches per repetition")
    p.add_argument("--warmup", type=int, default=5, help="untimed batches per repetition")
    p.add_argument("--repeats", type=int, default=5, help="alternated repetitions of each loop")
    p.add_argument("--num-classes", type=int, default=10, help="labels of the synthetic data")
    p.add_argument("--data-size", type=int, default=64, help="image side of the data benchmark")
    p.add_argument("--data-images", type=int, default=16384, help="images held by the data benchmark")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers of the data benchmark")
    p.add_argument("--on-device", action="store_true",
                   help="data benchmark: serve from images held on the device (data.on_device)")
    p.add_argument("--rows", default=None, help="suite: only these rows, e.g. 0-3,7 (see --list)")
    p.add_argument("--list", action="store_true", help="suite: print the numbered rows and exit")
    p.add_argument("--callbacks", default="bare", choices=("bare", "run"),
                   help="train benchmark: the module alone, or with the callbacks and loggers of a run "
                        "(sample grids, checkpoints, curves, divergence guard, progress bar, CSV, ...)")
    p.add_argument("--phase", type=int, default=None,
                   help="train benchmark of a growing model (pggan): the resolution it is held at")
    p.add_argument("--alpha", type=float, default=1.0, help="with --phase: the fade-in weight it is held at")
    p.add_argument("--profile", type=int, default=0,
                   help="train benchmark: then profile this many batches of each loop (torch.profiler) and write "
                        f"where the time goes to {PROFILES_NAME} next to --output")
    p.add_argument("--epoch-images", type=int, default=0,
                   help="train benchmark: also report the time of an epoch of this many images")
    p.add_argument("--output", default=str(DEFAULT_OUTPUT), help="markdown file appended to ('-': none)")
    args = p.parse_intermixed_args(argv)
    args.argv = list(argv or [])
    args.precision = PRECISIONS[args.precision]
    if args.device == "cuda" and not torch.cuda.is_available() and not args.list:
        raise UserError("--device cuda was requested but no CUDA device is available; use --device cpu.")
    if min(args.steps, args.repeats) < 1 or args.warmup < 0:
        raise UserError("--steps and --repeats must be >= 1 and --warmup >= 0; e.g. --steps 50 --warmup 5.")
    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha {args.alpha} must lie in [0, 1] (0: the new layers start fading in, 1: grown in).")
    if not 0 <= args.profile <= args.steps:
        raise UserError(f"--profile {args.profile} must be between 0 (off) and --steps {args.steps}: the profiled "
                        f"batches are among the timed ones; e.g. --profile 10.")
    if args.cuda_graph and args.device != "cuda" and not args.list:
        raise UserError("--cuda-graph captures the step on a GPU; use it with --device cuda.")
    if args.cuda_graph and args.warmup <= PlainLoop.GRAPH_WARMUP:
        raise UserError(f"--cuda-graph needs --warmup >= {PlainLoop.GRAPH_WARMUP + 1} (the eager batches before the "
                        f"capture and the capture itself stay untimed); got --warmup {args.warmup}.")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # keep the table readable
    warnings.filterwarnings("ignore", message=".*(val_dataloader|LeafSpec|does not have many workers|"
                                              "smaller than the logging interval).*")
    try:
        args = parse_args(argv)
        if args.what == "suite" and args.list:
            print("\n".join(f"{i:3d}  {row}" for i, row in enumerate(SUITES[args.device])))
            return 0
        if args.what == "suite":
            jobs = suite_jobs(args)
        else:
            jobs = [argparse.Namespace(**{**vars(args), "what": what})
                    for what in ("train", "data") if args.what in (what, "all")]
    except UserError as exc:
        print(f"gan_lab: error: {exc}", file=sys.stderr)
        return 2
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    out = None if args.output == "-" else Path(args.output)
    profiles_out = None if out is None else out.with_name(PROFILES_NAME)
    command = "python -m gan_lab.bench " + " ".join(argv)
    profiled = False

    def emit(text: str) -> None:
        """Print a report line and append it to the output file."""
        print(text, flush=True)
        if out is not None:
            with out.open("a") as f:
                f.write(text + "\n")

    for i, job in enumerate(jobs):
        profile = None
        try:
            row, profile = (bench_train if job.what == "train" else bench_data)(job)
        except Exception as exc:  # a suite reports a failing setting (e.g. a compile mode) and goes on
            if args.what == "suite":
                row = failed_row(job, exc)
            elif isinstance(exc, UserError):
                print(f"gan_lab: error: {exc}", file=sys.stderr)
                return 2
            else:
                raise
        if i == 0:  # only once a row exists: a setting refused up front writes nothing
            if out is not None:
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(reopened(out, HEADER))
            emit(f"{section_header(command)}\n\n{TABLE_HEADER}")
        emit(table_row(row))
        if profile is not None:
            print("\n" + profile + "\n", flush=True)
            if profiles_out is not None:  # the section's heading comes before its first profile
                head = "" if profiled else section_header(command) + "\n\n"
                profiles_out.write_text(reopened(profiles_out, PROFILES_HEADER) + head + profile + "\n")
                profiled = True
    return 0
