"""Bad inputs to ``evaluate``, ``generate``, ``explore`` and ``report``: one sentence naming the key or the
file (exit status 2, no traceback); a damaged run of a sweep is listed and the others reported; a run on
read-only storage still generates; Ctrl-C during ``evaluate`` is one line.

The tables call each entry point's ``main`` as the command line does (``sys.argv``, Hydra included),
in this process; read-only storage and Ctrl-C need a process of their own.
"""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gan_lab.report import main as report_main
from tests.conftest import ROOT, one_error_line, run_main
from tests.test_sweep import write_run

@pytest.fixture
def run(cli_run) -> Path:
    """The session's trained run (tests/conftest.py)."""
    return cli_run


#: damaged .hydra/config.yaml of a run: (its text, what the sentence says of it)
DAMAGED_CONFIGS = {
    "empty config": ("", "is empty"),
    "config not YAML": ("model: [dcgan\n", "is not valid YAML"),
    "config without model": ("data:\n  _target_: gan_lab.data.Digits\n", "has no model section"),
    "config without data": ("model:\n  _target_: gan_lab.models.DCGAN\n", "has no data section"),
}


def damaged_copy(run: Path, tmp_path: Path, text: str) -> Path:
    copy = tmp_path / "damaged"
    shutil.copytree(run, copy)
    (copy / ".hydra" / "config.yaml").write_text(text)
    return copy


EVALUATE_CASES = {
    "zero batch size": (["evaluator.batch_size=0"], "evaluator.batch_size=0", "e.g. evaluator.batch_size=256"),
    "quantile above 1": (["evaluator.memorisation_quantile=2"], "evaluator.memorisation_quantile=2", "[0, 1]"),
    "zero KID subsets": (["evaluator.kid_subsets=0"], "evaluator.kid_subsets=0", "e.g. evaluator.kid_subsets=100"),
    "negative real images": (["evaluator.num_real=-5"], "evaluator.num_real=-5", "e.g. evaluator.num_real="),
    "negative neighbours": (["evaluator.neighbours=-3"], "evaluator.neighbours=-3", "e.g. evaluator.neighbours=8"),
    "no metric": (["metrics=[]"], "metrics=[]", "e.g. metrics=[fid,kid]"),
    "unknown device": (["device=tpu"], "device=tpu", "device=cpu"),
    "accuracy of an unconditional model": (["metrics=[accuracy]", "num_samples=16"], "metrics=['accuracy']",
                                           "class-conditional", "e.g. metrics=[fid,kid]"),
    **{name: ([], "is damaged", ".hydra/config.yaml", said) for name, (_, said) in DAMAGED_CONFIGS.items()},
}


@pytest.mark.parametrize("case", list(EVALUATE_CASES), ids=list(EVALUATE_CASES))
def test_evaluate_refuses_bad_input_in_one_sentence(case, run, tmp_path, capsys):
    args, *expected = EVALUATE_CASES[case]
    run_dir = damaged_copy(run, tmp_path, DAMAGED_CONFIGS[case][0]) if case in DAMAGED_CONFIGS else run
    before = (run_dir / "metrics.json").read_bytes()
    one_error_line(run_main("gan_lab.evaluate", f"run_dir={run_dir}", "device=cpu", *args, capsys=capsys), *expected)
    assert (run_dir / "metrics.json").read_bytes() == before  # no record appended


GENERATE_CASES = {
    "out_dir is a file": (["out_dir={run}/metrics.json"], "out_dir={run}/metrics.json cannot be written",
                          "is a file"),
    "unknown interpolation mode": (["interpolation.modes=[foo]"], "interpolation.modes=['foo']",
                                   "e.g. interpolation.modes=[linear,spherical]"),
    "no class": (["classes=[]"], "classes=[]", "e.g. classes=[0,1]"),
    "unknown device": (["device=tpu"], "device=tpu", "device=cpu"),
    "ema not a boolean": (["ema=maybe"], "ema='maybe' must be true or false"),
    "individual not a boolean": (["individual=maybe"], "individual='maybe' must be true or false"),
    "gif not a boolean": (["interpolation.gif=often"], "interpolation.gif='often' must be true or false"),
    "no images": (["num_samples=0"], "num_samples=0 must be an integer >= 1", "e.g. num_samples=64"),
    "a seed that is a word": (["interpolation.seeds=[0,a]"], "interpolation.seeds=[0,a]", "e.g. interpolation.seeds=[0,1]"),
    **{name: ([], "is damaged", ".hydra/config.yaml", said) for name, (_, said) in DAMAGED_CONFIGS.items()},
}


@pytest.mark.parametrize("case", list(GENERATE_CASES), ids=list(GENERATE_CASES))
def test_generate_refuses_bad_input_in_one_sentence(case, run, tmp_path, capsys):
    args, *expected = GENERATE_CASES[case]
    run_dir = damaged_copy(run, tmp_path, DAMAGED_CONFIGS[case][0]) if case in DAMAGED_CONFIGS else run
    args = [a.format(run=run_dir) for a in args]
    out = tmp_path / "generated"
    default_out = [] if any(a.startswith("out_dir=") for a in args) else [f"out_dir={out}"]
    res = run_main("gan_lab.generate", f"run_dir={run_dir}", *default_out, *args, capsys=capsys)
    one_error_line(res, *(e.format(run=run_dir) for e in expected))
    assert not out.exists()  # refused before anything was drawn


EXPLORE_CASES = {
    "samples not a number": (["explore.samples=abc"], "explore.samples='abc' must be an integer >= 1"),
    "zero samples": (["explore.samples=0"], "explore.samples=0 must be an integer >= 1"),
    "negative samples": (["explore.samples=-5"], "explore.samples=-5 must be an integer >= 1"),
    "zero images per row": (["explore.nrow=0"], "explore.nrow=0 must be an integer >= 1", "e.g. explore.nrow=8"),
}


@pytest.mark.parametrize("case", list(EXPLORE_CASES), ids=list(EXPLORE_CASES))
def test_explore_refuses_bad_input_in_one_sentence(case, tmp_path, capsys):
    args, *expected = EXPLORE_CASES[case]
    out = tmp_path / "explore"
    one_error_line(run_main("gan_lab.explore", f"hydra.run.dir={out}", *args, capsys=capsys), *expected)
    assert not (out / "summary.json").exists()


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _append(path: Path, line: str) -> None:
    with open(path, "a", newline="") as fh:
        fh.write(line)


#: damage done to one run of a sweep: (what is done to the run folder, file named, words of the reason,
#: whether the run keeps its row)
DAMAGE = {
    "truncated metrics.json": (lambda r: _truncate(r / "metrics.json"), "metrics.json", "is not valid JSON", False),
    "metrics.json not an object": (lambda r: (r / "metrics.json").write_text("[1, 2]"), "metrics.json",
                                   "holds a JSON list", False),
    "metrics.csv row not numbers": (lambda r: _append(r / "metrics.csv", "0,,,3,4,0.5,abc,0.5,1.0,256\r\n"),
                                    "metrics.csv", "has train/d_loss='abc' in line 4", False),
    "metrics.csv NUL bytes": (lambda r: _append(r / "metrics.csv", "\0" * 64), "metrics.csv", "has NUL bytes", False),
    "overrides.yaml not YAML": (lambda r: (r / ".hydra" / "overrides.yaml").write_text("[noise=normal, seed=0\n"),
                                ".hydra/overrides.yaml", "is not valid YAML", False),
    "corrupt final.png": (lambda r: _truncate(r / "samples" / "final.png"), "samples/final.png",
                          "cannot be decoded", True),
}


@pytest.mark.parametrize("case", list(DAMAGE), ids=list(DAMAGE))
def test_report_lists_a_damaged_run_and_reports_the_others(case, tmp_path, capsys):
    from PIL import Image

    damage, file, reason, kept = DAMAGE[case]
    sweep = tmp_path / "sweep"
    for i, noise in enumerate(("uniform", "normal", "gamma")):
        write_run(sweep / str(i), [f"noise={noise}"], g_loss=[1.0 + i], d_real=[0.5])
        (sweep / str(i) / "samples").mkdir()
        Image.new("RGB", (34, 34), (40 * i, 0, 0)).save(sweep / str(i) / "samples" / "final.png")
    damage(sweep / "1")
    assert report_main([str(sweep)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    warnings = [line for line in err.splitlines() if line.startswith("gan_lab: warning:")]
    assert len(warnings) == 1 and f"`1`: {file} {reason}" in warnings[0], err
    text = (sweep / "report" / "README.md").read_text()
    rows = [line.split(" | ")[0].strip("| ") for line in text.splitlines() if line.startswith("| ")][1:]
    assert sorted(rows) == sorted(["uniform", "gamma", *(["normal"] if kept else [])])
    listed = [line for line in text.splitlines() if line.startswith("- `1`:")]
    assert len(listed) == 1 and f"{file} {reason}" in listed[0]
    assert (sweep / "report" / "samples.png").is_file()


def test_report_into_a_file_is_one_sentence(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    write_run(sweep / "0", ["noise=uniform"], g_loss=[1.0], d_real=[0.5])
    target = tmp_path / "taken.md"
    target.write_text("mine")
    assert report_main([str(sweep), "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"gan_lab: error: --out {target} is a file" in err
    assert target.read_text() == "mine"


# --- a process of their own ------------------------------------------------------------------------------

def read_only(run: Path, *command: str) -> subprocess.CompletedProcess:
    """``command`` (a gan_lab module and its arguments) with ``run`` mounted read-only over itself, in a
    mount namespace of its own (nothing outside the command sees the mount)."""
    script = (f'mount --bind "{run}" "{run}" && mount -o remount,bind,ro "{run}" && '
              f'exec "{sys.executable}" -m "$@"')
    return subprocess.run(["unshare", "--mount", "sh", "-c", script, "sh", *command], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def read_only_works(tmp_path_factory) -> None:
    probe = tmp_path_factory.mktemp("probe")
    res = subprocess.run(["unshare", "--mount", "sh", "-c", f'mount --bind "{probe}" "{probe}" && '
                          f'mount -o remount,bind,ro "{probe}" && ! touch "{probe}/x" 2>/dev/null'],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"no read-only bind mount in a mount namespace here (needs root): {res.stderr.strip()}")


def test_a_run_on_read_only_storage_generates_elsewhere_and_evaluate_says_why_not(run, read_only_works, tmp_path):
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    out = tmp_path / "generated"
    res = read_only(run, "gan_lab.generate", f"run_dir={run}", f"out_dir={out}", "device=cpu", "num_samples=4",
                    "interpolation.seeds=[]")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "samples.png").is_file()
    res = read_only(run, "gan_lab.evaluate", f"run_dir={run}", "device=cpu", "metrics=[scores]", "num_samples=16")
    one_error_line(res, f"run_dir={run} ", "read-only file system")
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before


@pytest.mark.slow
def test_ctrl_c_during_evaluate_is_one_line(run, tmp_path):
    log = run / "evaluation" / "evaluate.log"  # Hydra opens it just before the evaluation starts
    log.unlink(missing_ok=True)
    before = json.loads((run / "metrics.json").read_text())
    # a domain extractor of a million steps: the evaluation is still running when Ctrl-C comes
    proc = subprocess.Popen([sys.executable, "-m", "gan_lab.evaluate", f"run_dir={run}", "device=cpu",
                             "metrics=[fid]", "num_samples=16", "evaluator.extractor.kind=domain",
                             "evaluator.extractor.steps=1000000", f"evaluator.extractor.cache_dir={tmp_path}"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not log.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("gan_lab:")]
    assert len(lines) == 1 and all(s in lines[0] for s in ("gan_lab: evaluate", "Ctrl-C")), lines
    assert json.loads((run / "metrics.json").read_text()) == before
