"""``metrics.json`` of a run: several writers (training summary, evaluations) share one file.

Every write is read-modify-write of the keys it owns and an atomic replace, so no writer clobbers
another's keys.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gan_lab.fs import atomic_write_text


def read_metrics_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}


def update_metrics_json(path: str | Path, updates: dict[str, Any]) -> dict:
    """Set the top-level ``updates`` keys, keeping every other key of the file."""
    path = Path(path)
    data = read_metrics_json(path)
    data.update(updates)
    atomic_write_text(json.dumps(data, indent=2), path)
    return data


def append_evaluation(path: str | Path, record: dict) -> dict:
    """Append one evaluation record to the file's ``evaluations`` list."""
    data = read_metrics_json(path)
    return update_metrics_json(path, {"evaluations": [*data.get("evaluations", []), record]})
