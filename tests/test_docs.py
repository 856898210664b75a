"""Every command line shown in README.md, docs/ and experiments/*/README.md composes (a typo or a key
the config does not have would greet the user with Hydra's error instead of a run), and every link
between those pages leads to a file that exists."""
from __future__ import annotations

import re
import shlex
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


def test_the_docs_show_commands_of_every_entry_point():
    entries = {command.split()[2] for _, command in COMMANDS}
    assert entries == {f"gan_lab.{name}" for name in CONFIG_NAMES}, entries
    assert len(COMMANDS) > 40


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
