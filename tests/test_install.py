"""gan_lab installed from its wheel into a fresh virtual environment that does not see the repository
(its heavy dependencies come from the project's environment through a .pth file), run from a folder
outside the repository by its console scripts."""
from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.install


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The fresh environment's bin/ folder."""
    tmp = tmp_path_factory.mktemp("install")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp / "dist"), str(ROOT)], check=True, capture_output=True, cwd=tmp)
    wheel = next((tmp / "dist").glob("gan_lab-*.whl"))
    env = tmp / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, capture_output=True)
    purelib = subprocess.run([str(env / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "project_dependencies.pth").write_text(site.getsitepackages()[0] + "\n")
    subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True)
    return env / "bin"


def run(bin_dir: Path, command: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": "", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([str(bin_dir / command), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_wheel_carries_the_configs_and_the_commands(installed, tmp_path):
    where = run(installed, "python", "-c", "import gan_lab; print(gan_lab.__file__, gan_lab.CONFIG_DIR)", cwd=tmp_path)
    module, config_dir = where.stdout.split()
    assert not module.startswith(str(ROOT)) and not config_dir.startswith(str(ROOT)), where.stdout
    assert Path(config_dir, "config.yaml").is_file() and Path(config_dir, "experiment", "digits.yaml").is_file()
    for command in ("run", "evaluate", "generate", "explore", "report", "bench", "fetch"):
        assert (installed / f"gan-lab-{command}").is_file(), command
    res = run(installed, "gan-lab-run", "--cfg", "job", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "_target_: gan_lab.data.Digits" in res.stdout


def test_the_installed_commands_train_and_compose_every_preset(installed, tmp_path):
    out = tmp_path / "run"
    res = run(installed, "gan-lab-run", "experiment=digits", "trainer=debug", "trainer.max_epochs=1",
              "callbacks.progress_bar=null", "trainer.enable_progress_bar=false", f"hydra.run.dir={out}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["status"] == "completed"

    presets = tmp_path / "presets" / "experiment"
    presets.mkdir(parents=True)
    (presets / "my_dcgan.yaml").write_text("# @package _global_\ndefaults:\n  - override /model: dcgan\n"
                                           "  - override /data: mnist\ntrainer:\n  max_epochs: 5\n")
    res = run(installed, "gan-lab-run", f"hydra.searchpath=[file://{tmp_path / 'presets'}]", "experiment=my_dcgan",
              "--cfg", "job", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "_target_: gan_lab.data.MNIST" in res.stdout and "max_epochs: 5" in res.stdout

    script = ("from hydra import compose, initialize_config_dir\nimport gan_lab\n"
              "names = sorted(p.stem for p in (gan_lab.CONFIG_DIR / 'experiment').glob('*.yaml'))\n"
              "for name in names:\n"
              "    with initialize_config_dir(config_dir=str(gan_lab.CONFIG_DIR), version_base='1.3'):\n"
              "        cfg = compose('config', overrides=[f'experiment={name}'])\n"
              "    assert cfg.model._target_ and cfg.data._target_, name\n"
              "print(len(names))\n")
    res = run(installed, "python", "-c", script, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert int(res.stdout) == len(list((ROOT / "conf" / "experiment").glob("*.yaml"))) >= 17
