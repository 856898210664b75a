"""Shared fixtures: compose the real config, shrink it, train through the real entry point.

Every test runs offline: caches of matplotlib, torch and W&B go to a temporary folder and W&B is
disabled unless a test enables offline mode itself.
"""
from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from gan_lab.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

#: overrides that make any run tiny: CPU, 2 epochs of 3 batches, small nets, no progress bar
TINY = [
    "trainer=debug",
    "noise.latent_dim=16",
    "callbacks.progress_bar=null",
    "trainer.enable_progress_bar=false",
]


@pytest.fixture(scope="session", autouse=True)
def _offline_env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    for key, sub in (("MPLCONFIGDIR", "mpl"), ("TORCH_HOME", "torch"), ("WANDB_DIR", "wandb"),
                     ("XDG_CACHE_HOME", "xdg")):
        os.environ[key] = str(cache / sub)
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ["MPLBACKEND"] = "Agg"
    torch.set_num_threads(min(2, torch.get_num_threads()))
    yield


def compose_config(overrides: list[str] | None = None, run_dir: Path | str | None = None) -> DictConfig:
    """The config ``python -m gan_lab.run <overrides>`` would see, with ``run_dir`` set."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides or []))
    if run_dir is not None:
        with open_dict(cfg):
            cfg.run_dir = str(run_dir)
            cfg.run_name = "test"
    return cfg


@pytest.fixture
def make_cfg(tmp_path):
    """``make_cfg(*overrides, tiny=True)`` -> a composed config writing into ``tmp_path/run``."""

    def _make(*overrides: str, tiny: bool = True, run_dir: Path | None = None) -> DictConfig:
        return compose_config([*(TINY if tiny else []), *overrides], run_dir or tmp_path / "run")

    return _make


def run_main(module: str, *args: str, capsys) -> subprocess.CompletedProcess:
    """Run an entry point's Hydra ``main`` in this process with ``args`` as its command line (as
    ``python -m <module>`` would, seconds faster than a subprocess): its exit status and stderr. Hydra's
    global state and the root logger are put back afterwards."""
    import importlib
    import logging

    from hydra.core.hydra_config import HydraConfig

    main = importlib.import_module(module).main
    GlobalHydra.instance().clear()
    argv, hydra_cfg = sys.argv, HydraConfig.instance().cfg
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    sys.argv = [module, *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv, HydraConfig.instance().cfg = argv, hydra_cfg
        GlobalHydra.instance().clear()
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:], root.level = handlers, level
    out = capsys.readouterr()
    return subprocess.CompletedProcess([module, *args], code, out.out, out.err)


#: a tiny run: 2 epochs of 3 batches of narrow DCGAN nets on the bundled digits
SMALL = [*TINY, "model.generator.width=8", "model.discriminator.width=8"]


@pytest.fixture(scope="session")
def cli_run(tmp_path_factory) -> Path:
    """A :data:`SMALL` run trained through the command line (Hydra writes its .hydra/ folder and run.log);
    tests that change it work on a copy."""
    run = tmp_path_factory.mktemp("cli") / "run"
    res = run_cli(*SMALL, f"hydra.run.dir={run}")
    assert res.returncode == 0, res.stderr[-3000:]
    return run


def one_error_line(res: subprocess.CompletedProcess, *expected: str) -> str:
    """Exit status 2, exactly one ``gan_lab: error:`` line holding every ``expected``, no traceback."""
    assert res.returncode == 2, (res.returncode, res.stdout[-1500:], res.stderr[-3000:])
    assert "Traceback" not in res.stderr and "HYDRA_FULL_ERROR" not in res.stderr, res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("gan_lab: error:")]
    assert len(errors) == 1, res.stderr[-3000:]
    assert all(e in errors[0] for e in expected), errors[0]
    return errors[0]


@contextmanager
def refused(*named: str, error: type[Exception] = UserError):
    """Expect ``error`` whose message names every string of ``named`` (the key, its value, the fix's key or
    value): what a one-sentence error must hold, whatever its wording."""
    with pytest.raises(error) as info:
        yield info
    assert all(n in str(info.value) for n in named), str(info.value)


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 300, module: str = "gan_lab.run",
            env: dict | None = None) -> subprocess.CompletedProcess:
    """Run an entry point in a subprocess, as a user would, capturing its output."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd or ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


#: the narrowest nets of each model that still train (tiny runs over every model)
NARROW_NETS = {
    "dcgan": ["model.generator.width=4", "model.discriminator.width=4"],
    "wgan_gp": ["model.generator.width=4", "model.discriminator.width=4"],
    "wgan": ["model.generator.width=4", "model.discriminator.width=4"],
    "cdcgan": ["model.generator.width=4", "model.discriminator.width=4", "model.samples_per_class=2"],
    "cgan_mlp": ["model.generator.hidden=[16,16]", "model.discriminator.hidden=[16,16]", "model.samples_per_class=2"],
    "artgan": ["model.generator.width=4", "model.samples_per_class=2"],
    "pggan": ["model.generator.fmap_base=64", "model.discriminator.fmap_base=64", "model.generator.fmap_max=8",
              "model.discriminator.fmap_max=8", "model.num_samples=4"],
}


def layer_table(net: nn.Module, *inputs, with_parameters_only: bool = False) -> list[tuple[str, tuple, int]]:
    """(type, output shape without the batch, own parameter count) of every leaf layer (or of every layer
    holding parameters), in the order they run: a net compared with a report's layer table."""
    def wanted(m: nn.Module) -> bool:
        if with_parameters_only:
            return next(m.parameters(recurse=False), None) is not None
        return not list(m.children()) and not isinstance(m, nn.Identity)

    rows: list[tuple[str, tuple, int]] = []
    hooks = [m.register_forward_hook(lambda m, _i, out: rows.append(
        (type(m).__name__, tuple(out.shape[1:]), sum(p.numel() for p in m.parameters(recurse=False)))))
        for m in net.modules() if wanted(m)]
    net.eval()
    with torch.no_grad():
        net(*inputs)
    for h in hooks:
        h.remove()
    return rows


def pytest_collection_modifyitems(config, items) -> None:
    """``-m gpu`` on a machine without CUDA is an error, not a run of zero tests that passes."""
    if "gpu" in (config.getoption("-m") or "").replace("not gpu", "") and not torch.cuda.is_available():
        raise pytest.UsageError("the gpu tests (-m gpu) need a CUDA device and torch sees none; run them on a "
                                "GPU machine (make gpu-check).")
