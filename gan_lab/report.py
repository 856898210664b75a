"""Summarise a sweep: ``python -m gan_lab.report <sweep_dir> [--out DIR]``.

Writes ``README.md`` (a row per swept setting: mean ± std over finished seeds), ``curves.png``,
``metric_vs_<param>.png`` and ``samples.png`` to ``--out`` (default ``<sweep_dir>/report/``); unreadable runs are
left out and listed."""
from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import yaml
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from gan_lab.errors import UserError, yaml_problem
from gan_lab.metrics.suite import logged_values

#: training terms shown first, each as its final value and its mean over training
PREFERRED = ("train/d_loss", "train/g_loss", "train/d_real", "train/d_fake")
CURVES = ("d_loss", "g_loss", "d_real", "d_fake")


@dataclass
class Run:
    path: Path
    overrides: dict[str, str]
    summary: dict
    metrics: dict[str, float]
    #: the training terms of metrics.csv: name -> [(images seen, value)]
    curves: dict[str, list[tuple[float, float]]]
    #: samples/final.png, when it exists and decodes
    grid: Path | None = None

    @property
    def status(self) -> str:
        return str(self.summary.get("status", "unknown"))

    @property
    def finished(self) -> bool:
        """Completed, or interrupted by ``max_time``; only these enter a setting's statistics."""
        return self.status == "completed" or (self.status == "interrupted"
                                               and self.summary.get("reason") == "max_time")


class DamagedFile(Exception):
    """A file of a run that cannot be read: ``file`` (relative to the run) and why."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"{file} {reason}")
        self.file, self.reason = file, reason


@dataclass
class Damage:
    """A damaged file of a run and what the report does without it."""

    run: Path
    file: str
    reason: str
    #: the run is left out of the report (else only the file is)
    left_out: bool = True

    def describe(self, sweep_dir: Path) -> str:
        what = ("the run is left out of the report" if self.left_out
                else "its samples are left out of samples.png")
        return f"`{self.run.relative_to(sweep_dir)}`: {self.file} {self.reason}; {what}"


def find_runs(sweep_dir: Path, damaged: list[Damage] | None = None) -> list[Run]:
    """Every run below ``sweep_dir`` that can be read; a damaged one goes to ``damaged`` instead
    (one with only a bad ``samples/final.png`` goes to both)."""
    runs = []
    for cfg in sorted(sweep_dir.rglob(".hydra/config.yaml")):
        path = cfg.parent.parent
        if "report" in path.relative_to(sweep_dir).parts:
            continue
        try:
            run = read_run(path)
        except DamagedFile as exc:
            if damaged is not None:
                damaged.append(Damage(path, exc.file, exc.reason))
            continue
        grid = path / "samples" / "final.png"
        if grid.exists():
            try:
                with Image.open(grid) as image:
                    image.load()
                run.grid = grid
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
                if damaged is not None:
                    damaged.append(Damage(path, "samples/final.png", f"cannot be decoded as an image ({exc})",
                                          left_out=False))
        runs.append(run)
    return runs


def read_run(path: Path) -> Run:
    """A run's overrides, ``metrics.json`` and ``metrics.csv``; :class:`DamagedFile` names the first of
    them that cannot be read."""
    overrides = read_overrides(path / ".hydra" / "overrides.yaml")
    summary_file = path / "metrics.json"
    summary = read_summary(summary_file) if summary_file.exists() else {"status": "no metrics.json"}
    final = summary.get("final") or {}
    try:
        metrics = {k: float(v) for k, v in final.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        # the newest evaluated value of each metric, under its logged name (per-class ones left out)
        for record in summary.get("evaluations") or []:
            for k, value in logged_values(record.get("results") or {}).items():
                if k not in final and k.count("/") == 1:
                    metrics[k] = value
    except (AttributeError, TypeError, ValueError) as exc:
        raise DamagedFile("metrics.json", f"is not in the format gan_lab writes ({type(exc).__name__}: "
                                          f"{exc})") from None
    for term in PREFERRED:
        if term in metrics:
            metrics[f"{term} (final)"] = metrics.pop(term)
    curves = read_curves(path / "metrics.csv")
    metrics.update({f"train/{name} (mean)": statistics.fmean(v for _, v in points) for name, points in curves.items()})
    return Run(path, overrides, summary, metrics, curves)


def read_overrides(file: Path) -> dict[str, str]:
    """``.hydra/overrides.yaml`` as ``{key: value}``, Hydra's own keys left out (``{}`` when there is none)."""
    name = ".hydra/overrides.yaml"
    if not file.exists():
        return {}
    try:
        raw = yaml.safe_load(file.read_text())
    except UnicodeDecodeError:
        raise DamagedFile(name, "is not text") from None
    except yaml.YAMLError as exc:
        raise DamagedFile(name, f"is not valid YAML ({yaml_problem(exc)})") from None
    if raw is not None and not isinstance(raw, list):
        raise DamagedFile(name, f"holds a YAML {type(raw).__name__}, not the list of overrides")
    pairs = (str(item).partition("=") for item in raw or [])
    return {key.lstrip("+~"): value for key, _, value in pairs if not key.lstrip("+~").startswith("hydra")}


def read_summary(file: Path) -> dict:
    """``metrics.json``: a JSON object."""
    try:
        summary = json.loads(file.read_text())
    except UnicodeDecodeError:
        raise DamagedFile("metrics.json", "is not text") from None
    except json.JSONDecodeError as exc:
        raise DamagedFile("metrics.json", f"is not valid JSON ({exc.msg}: line {exc.lineno} column "
                                          f"{exc.colno})") from None
    if not isinstance(summary, dict):
        raise DamagedFile("metrics.json", f"holds a JSON {type(summary).__name__}, not an object")
    for key, kind in (("final", dict), ("evaluations", list), ("diverged", dict), ("slurm", dict)):
        if summary.get(key) is not None and not isinstance(summary[key], kind):
            raise DamagedFile("metrics.json", f"has a {key} that is a JSON {type(summary[key]).__name__}, "
                                              f"not {'an object' if kind is dict else 'a list'}")
    return summary


def swept_keys(runs: list[Run]) -> list[str]:
    """Override keys whose value differs between runs, ``seed`` excluded."""
    keys = sorted({k for r in runs for k in r.overrides})
    return [k for k in keys if k != "seed" and len({r.overrides.get(k) for r in runs}) > 1]


def group_settings(runs: list[Run], keys: list[str]) -> dict[tuple, list[Run]]:
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for r in runs:
        groups[tuple(r.overrides.get(k, "") for k in keys)].append(r)
    return dict(groups)


def fmt(values: list[float]) -> str:
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}"


def table(runs: list[Run], groups: dict[tuple, list[Run]], keys: list[str]) -> tuple[str, list[str]]:
    columns = [f"{term} ({kind})" for term in PREFERRED for kind in ("final", "mean")]
    names = [m for m in columns if any(m in r.metrics for r in runs)]
    names += sorted({m for r in runs for m in r.metrics} - set(names) - {"train/batches_seen", "train/images_seen"})
    header = [*(keys or ["setting"]), "seeds", "status", *names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for setting, members in groups.items():
        finished = [m for m in members if m.finished]  # the seeds the statistics are over
        row = [*(setting if keys else ["all"]), str(len(finished)), statuses(members)]
        row += [fmt([m.metrics[n] for m in finished if n in m.metrics]) for n in names]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines), names


def statuses(members: list[Run]) -> str:
    """How a setting's runs ended, counted: ``2 completed, 1 diverged``."""
    counts = Counter("completed (max_time)" if m.finished and m.status != "completed" else m.status for m in members)
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


def shown_run(members: list[Run]) -> Run:
    """The run of a setting whose curves and samples the figures show: its first finished one."""
    return next((m for m in members if m.finished), members[0])


def read_curves(path: Path) -> dict[str, list[tuple[float, float]]]:
    """The training terms of ``metrics.csv`` (``path``) against images seen; :class:`DamagedFile` for a row that
    is not numbers."""
    if not path.exists():
        return {}
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    try:
        with open(path) as fh:
            reader = csv.DictReader(fh)
            for row in reader:
                if any("\0" in str(value) for value in row.values()):
                    raise DamagedFile("metrics.csv", f"has NUL bytes in line {reader.line_num} (a write cut short)")
                x = row.get("train/images_seen")
                if not x:
                    continue
                for name in CURVES:
                    v = row.get(f"train/{name}")
                    if v:
                        out[name].append((_number(x, reader.line_num, "train/images_seen"),
                                          _number(v, reader.line_num, f"train/{name}")))
    except UnicodeDecodeError:
        raise DamagedFile("metrics.csv", "is not text") from None
    except csv.Error as exc:
        raise DamagedFile("metrics.csv", f"cannot be parsed as CSV ({exc})") from None
    return out


def _number(text, line: int, column: str) -> float:
    """A value of ``metrics.csv``; :class:`DamagedFile` naming the line and column when it is not a number."""
    try:
        return float(text)
    except (TypeError, ValueError):
        raise DamagedFile("metrics.csv", f"has {column}={text!r} in line {line}, not a number") from None


def label(setting: tuple, keys: list[str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(keys, setting)) or "all"


def plot_curves(groups: dict[tuple, list[Run]], keys: list[str], path: Path) -> Path | None:
    curves = {s: shown_run(members).curves for s, members in groups.items()}
    if not any(curves.values()):
        return None
    fig = Figure(figsize=(5 * len(CURVES), 4))
    axes = fig.subplots(1, len(CURVES), squeeze=False)
    for ax, name in zip(axes[0], CURVES):
        for setting, c in curves.items():
            if c.get(name):
                xs, ys = zip(*c[name])
                ax.plot(xs, ys, label=label(setting, keys), linewidth=1)
        ax.set_title(name)
        ax.set_xlabel("images seen")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def plot_metric_vs_param(runs: list[Run], keys: list[str], names: list[str], out: Path) -> list[Path]:
    written = []
    for key in keys:
        try:
            xs_all = [float(r.overrides[key]) for r in runs if key in r.overrides]
        except ValueError:
            continue  # categorical parameter: the table shows it
        if len(set(xs_all)) < 2:
            continue
        shown = [n for n in names if any(n in r.metrics for r in runs)]
        if not shown:
            continue
        fig = Figure(figsize=(4 * len(shown), 3.5))
        axes = fig.subplots(1, len(shown), squeeze=False)
        for ax, name in zip(axes[0], shown):
            pts = sorted((float(r.overrides[key]), r.metrics[name]) for r in runs
                         if key in r.overrides and name in r.metrics)
            ax.plot(*zip(*pts), "o-")
            ax.set_xlabel(key)
            ax.set_title(name)
            if all(x > 0 for x, _ in pts) and max(x for x, _ in pts) / min(x for x, _ in pts) >= 100:
                ax.set_xscale("log")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out / f"metric_vs_{key.replace('/', '_').replace('.', '_')}.png"
        fig.savefig(path, dpi=90)
        written.append(path)
    return written


def sample_sheet(groups: dict[tuple, list[Run]], keys: list[str], path: Path) -> Path | None:
    tiles = []
    for setting, members in groups.items():
        grid = shown_run(members).grid
        if grid is not None:
            tiles.append((label(setting, keys), Image.open(grid).convert("RGB")))
    if not tiles:
        return None
    side = max(max(t.width, t.height) for _, t in tiles)
    cols = min(4, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    sheet = Image.new("RGB", (cols * (side + 10), rows * (side + 30)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (name, tile) in enumerate(tiles):
        x, y = (i % cols) * (side + 10), (i // cols) * (side + 30)
        sheet.paste(tile, (x, y + 20))
        draw.text((x + 2, y + 4), name[: side // 6], fill="black")
    sheet.save(path)
    return path


def report(sweep_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of ``sweep_dir``; returns the markdown file."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise UserError(f"sweep directory {sweep_dir} {'is a file' if sweep_dir.exists() else 'does not exist'}; "
                        f"pass the folder a multirun printed (e.g. multiruns/dcgan-digits/<date_time>).")
    named = f"--out {out}" if out else f"the report folder {sweep_dir / 'report'}"
    out = Path(out) if out else sweep_dir / "report"
    if out.exists() and not out.is_dir():
        raise UserError(f"{named} is a file; pass a folder for the report, e.g. --out {out.with_suffix('')}_report.")
    damaged: list[Damage] = []
    runs = find_runs(sweep_dir, damaged)
    for damage in damaged:
        print(f"gan_lab: warning: {damage.describe(sweep_dir)}.", file=sys.stderr)
    if not runs:
        if damaged:
            raise UserError(f"none of the {len(damaged)} runs below {sweep_dir} can be read (each is named above); "
                            f"restore their files from a copy, or remove those runs.")
        raise UserError(f"no runs (folders with .hydra/config.yaml) below {sweep_dir}; pass the folder "
                        f"of a multirun made with `python -m gan_lab.run -m ...`.")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{named} cannot be created ({exc.strerror or exc}); pass a writable folder with "
                        f"--out <folder>.") from None
    keys = swept_keys(runs)
    groups = group_settings(runs, keys)
    md, names = table(runs, groups, keys)
    figures = [plot_curves(groups, keys, out / "curves.png"), *plot_metric_vs_param([r for r in runs if r.finished], keys, names, out),
               sample_sheet(groups, keys, out / "samples.png")]
    seeds = sorted({r.overrides.get("seed", "config") for r in runs})
    text = [f"# Report of `{sweep_dir}`", "",
            f"{len(runs)} runs, {len(groups)} settings; swept: {', '.join(keys) or 'nothing'}; "
            f"seeds: {', '.join(seeds)}. Values are final logged values; `(mean)` columns are a training term's mean "
            f"over every logged step of the run (metrics.csv); each cell is the mean ± std over the seeds that "
            f"finished (completed, or reached their time budget; `seeds` counts them, `status` says how every run "
            f"ended: diverged, interrupted and crashed runs are left out of the statistics).", "", md, ""]
    unfinished = [unfinished_line(r, sweep_dir) for r in runs if not r.finished]
    if unfinished:
        text += ["Runs that did not finish:", "", *unfinished, ""]
    if damaged:
        text += ["Damaged runs (a file that cannot be read):", "", *(f"- {d.describe(sweep_dir)}" for d in damaged), ""]
    text += [f"![{p.stem}]({p.name})" for p in figures if p is not None]
    path = out / "README.md"
    path.write_text("\n".join(text) + "\n")
    print(md)
    if unfinished:
        print("\n" + "\n".join(unfinished))
    print(f"\nreport: {path}")
    return path


def unfinished_line(r: Run, sweep_dir: Path) -> str:
    """The line of a run that did not finish: its folder, how it ended, why, its SLURM job and logs."""
    s = r.summary
    why = s.get("error") or (s.get("diverged") or {}).get("message") or (
        f"signal {s['signal']}" if "signal" in s else "")
    job = s.get("slurm") or {}
    where = f"; SLURM job {job['job_id']}" if job.get("job_id") else ""
    where += f", requeued {job['requeues']} times" if job.get("requeues") else ""
    where += f"; logs: {job['logs']}" if job.get("logs") else ""
    last = r.path / "checkpoints" / "last.ckpt"
    where += f"; continue it with ckpt_path={last}" if r.status == "interrupted" and last.is_file() else ""
    return f"- `{r.path.relative_to(sweep_dir)}`: {r.status}{f' ({why})' if why else ''}{where}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gan_lab.report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="folder of a multirun (or of any runs)")
    parser.add_argument("--out", default=None, help="output folder (default: <sweep_dir>/report)")
    args = parser.parse_args(argv)
    try:
        report(args.sweep_dir, args.out)
    except UserError as exc:
        print(f"gan_lab: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
