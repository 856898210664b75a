"""``metrics.json`` of a run: several writers (training summary, evaluations) share one file.

Every write is a read-modify-write under an exclusive lock on ``metrics.json.lock``, ended by an
atomic replace. An unparseable file is never overwritten: it is kept aside as
``metrics.json.unreadable-<time>`` with a warning, and a fresh file is started.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

from gan_lab.fs import atomic_write_text, locked

log = logging.getLogger("gan_lab")


class UnreadableMetrics(ValueError):
    """``metrics.json`` exists but is not a JSON object."""


def _parse(path: Path) -> dict:
    """The file's content; ``{}`` when it does not exist; :class:`UnreadableMetrics` when it cannot
    be parsed."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError as exc:
        raise UnreadableMetrics(f"it is not UTF-8 text ({exc.reason})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UnreadableMetrics(f"it is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(data, dict):
        raise UnreadableMetrics(f"it holds a JSON {type(data).__name__}, not an object")
    return data


def read_metrics_json(path: str | Path) -> dict:
    """The file's content; ``{}`` when it does not exist or cannot be parsed (reading never changes it)."""
    try:
        return _parse(Path(path))
    except UnreadableMetrics as exc:
        log.warning("%s cannot be read (%s); it is left as it is", path, exc)
        return {}


def _keep_aside(path: Path, reason: str) -> None:
    """Rename an unreadable ``metrics.json`` to ``metrics.json.unreadable-<time>`` (never overwritten)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.unreadable-{stamp}")
    n = 1
    while aside.exists():
        aside = path.with_name(f"{path.name}.unreadable-{stamp}-{n}")
        n += 1
    os.replace(path, aside)
    log.warning("%s could not be read (%s): kept as %s, and a new %s was started; merge what you need "
                "from it by hand.", path, reason, aside.name, path.name)


def modify_metrics_json(path: str | Path, change: Callable[[dict], dict]) -> dict:
    """Apply ``change`` (the current content -> the new content) to the file under its lock, and
    replace the file atomically; returns the new content."""
    path = Path(path)
    with locked(path):
        try:
            data = _parse(path)
        except UnreadableMetrics as exc:
            _keep_aside(path, str(exc))
            data = {}
        data = change(data)
        atomic_write_text(json.dumps(data, indent=2), path)
    return data


def update_metrics_json(path: str | Path, updates: dict[str, Any]) -> dict:
    """Set the top-level ``updates`` keys, keeping every other key of the file."""
    return modify_metrics_json(path, lambda data: {**data, **updates})


def append_evaluation(path: str | Path, record: dict) -> dict:
    """Append one evaluation record to the file's ``evaluations`` list."""
    return modify_metrics_json(path, lambda data: {**data, "evaluations": [*data.get("evaluations", []), record]})
