"""Every command line shown in README.md, docs/ and experiments/*/README.md composes (a typo or a key
the config does not have would greet the user with Hydra's error instead of a run), every link
between those pages leads to a file that exists, and the pages build as a site (mkdocs.yml) in
strict mode: no broken link or anchor, no page left out."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from tests.conftest import CONF

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "experiments").rglob("README.md"))]
CONFIG_NAMES = {"run": "config", "evaluate": "evaluate", "generate": "generate", "explore": "explore"}


def documented_commands() -> list[tuple[str, str]]:
    """``(where, command)`` for each ``python -m gan_lab.<entry>`` line, continuations joined."""
    found = []
    for doc in DOCS:
        text = re.sub(r"\\\n\s*", " ", doc.read_text())
        for number, line in enumerate(text.splitlines(), 1):
            for match in re.finditer(r"python -m gan_lab\.(run|evaluate|generate|explore)\b([^`#\n]*)", line):
                found.append((f"{doc.relative_to(ROOT)}:{number}", match.group(0).strip()))
    return found


def first_of_sweep(token: str) -> str:
    """``key=a,b,c`` of a multirun -> ``key=a`` (lists in brackets and quoted values stay whole)."""
    key, _, value = token.partition("=")
    if value and not value.startswith(("[", "{", "'", '"', "${")) and "," in value:
        value = value.split(",")[0]
    return f"{key}={value}"


def overrides(command: str) -> tuple[str, list[str]]:
    """The config name and the overrides a command passes (placeholders dropped)."""
    words = shlex.split(command)
    entry = words[2].split(".")[1]
    multirun = "-m" in words
    kept = []
    for word in words[3:]:
        if word in ("-m", "--cfg", "job") or "<" in word or "..." in word:
            continue
        if word.startswith("[") and word.endswith("]"):  # an optional argument in the usage line
            word = word[1:-1]
        if "=" not in word:
            continue  # e.g. [overrides]
        kept.append(first_of_sweep(word) if multirun else word)
    return CONFIG_NAMES[entry], kept


COMMANDS = documented_commands()


# commands the pages show, one per form the extraction must find: a line of a fenced block with its comment
# cut, a multirun, inline code in prose, an indented block, a line continued with a backslash, each entry point
SHOWN = {
    ("README.md", "python -m gan_lab.run model=dcgan data=digits noise=uniform loss=hinge"),
    ("README.md", "python -m gan_lab.run -m noise=uniform,normal,gamma"),
    ("docs/runs.md", "python -m gan_lab.run callbacks.sample_grid.at_batches=[1,100,4000]"),
    ("docs/sweeps.md", "python -m gan_lab.run -m hparams_search=optuna experiment=digits"),
    ("docs/evaluation.md", "python -m gan_lab.generate run_dir=<run> interpolation.seeds=[0,1,2] interpolation.steps=10"),
    ("experiments/wasserstein_digits/README.md", "python -m gan_lab.run -m experiment=digits model=dcgan,wgan,wgan_gp "
                                                 "seed=0,1,2 trainer.max_epochs=-1 trainer.max_time=00:00:03:00"),
    ("experiments/artgan/README.md", "python -m gan_lab.run experiment=artgan_wikiart"),
    ("experiments/artgan/README.md", "python -m gan_lab.explore data=wikiart_genre"),
    ("experiments/artgan/README.md", "python -m gan_lab.evaluate run_dir=<run> metrics=[parzen,neighbours,memorisation,accuracy]"),
    ("experiments/pokemon/README.md", "python -m gan_lab.run experiment=pokemon_pggan128"),
}


def test_the_docs_show_commands_of_every_entry_point():
    entries = {command.split()[2] for _, command in COMMANDS}
    assert entries == {f"gan_lab.{name}" for name in CONFIG_NAMES}, entries
    found = {(where.rpartition(":")[0], " ".join(command.split())) for where, command in COMMANDS}
    assert not SHOWN - found, sorted(SHOWN - found)


@pytest.mark.parametrize("where,command", COMMANDS, ids=[where for where, _ in COMMANDS])
def test_documented_command_composes(where, command):
    config_name, args = overrides(command)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=args, return_hydra_config=True)
    GlobalHydra.instance().clear()
    for arg in args:  # every value shown reaches the config
        key, _, value = arg.partition("=")
        if (CONF / key).is_dir() or "/" in key or key.startswith(("+", "~", "hydra")) or value.startswith(("${", "[")):
            continue  # a group choice, a Hydra setting, an interpolation or a list
        node = cfg
        for part in key.split("."):
            node = node[int(part)] if part.isdigit() else node[part]
        assert same_value(node, value), (where, key, node, value)


def same_value(node, value: str) -> bool:
    if value == "null":
        return node is None
    try:
        return float(node) == float(value)
    except (TypeError, ValueError):
        return str(node).lower() == value.strip("'\"").lower()


def test_every_link_between_the_pages_leads_to_a_file():
    broken = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" not in target and not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_the_documentation_site_builds_strictly(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})  # Material's notice of its end of life
    assert done.returncode == 0, done.stderr
    for doc in DOCS:  # README.md -> index.html, docs/models.md -> docs/models/index.html
        page = doc.relative_to(ROOT).with_suffix("")
        page = page.parent if page.name == "README" else page
        assert (tmp_path / page / "index.html").is_file(), page
        for image in re.findall(r"!\[[^]]*\]\(([^)\s]+)\)", doc.read_text()):
            assert (tmp_path / page / image).is_file(), (page, image)
