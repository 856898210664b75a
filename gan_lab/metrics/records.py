"""A run's ``metrics.json``, shared by several writers: each write is locked (``metrics.json.lock``) and atomic.

An unparseable file is kept aside as ``metrics.json.unreadable-<time>`` (with a warning) and a new one started."""
from __future__ import annotations

import itertools
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
    """The file's content; ``{}`` when missing; :class:`UnreadableMetrics` when unparseable."""
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
    """The file's content; ``{}`` when missing or unparseable (the file is left as it is)."""
    try:
        return _parse(Path(path))
    except UnreadableMetrics as exc:
        log.warning("%s cannot be read (%s); it is left as it is", path, exc)
        return {}


def _keep_aside(path: Path, reason: str) -> None:
    """Rename an unreadable ``metrics.json`` to ``metrics.json.unreadable-<time>`` (never overwritten)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    names = (path.with_name(f"{path.name}.unreadable-{stamp}{f'-{n}' if n else ''}") for n in itertools.count())
    aside = next(name for name in names if not name.exists())
    os.replace(path, aside)
    log.warning("%s could not be read (%s): kept as %s, and a new %s was started; merge what you need "
                "from it by hand.", path, reason, aside.name, path.name)


def modify_metrics_json(path: str | Path, change: Callable[[dict], dict]) -> dict:
    """Apply ``change`` (content -> new content) under the file's lock and replace it atomically; returns the result."""
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
