"""The private parts of other libraries that gan_lab relies on, each in one function.

Each has a test in ``tests/test_compat.py`` that fails with a clear message when an upgrade
changes it, so that widening a dependency's pin is this file's work.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def sbatch_script(folder: str | Path, parameters: dict[str, Any]) -> str:
    """The sbatch script submitit writes for an executor's ``parameters`` (``executor.parameters``),
    with ``true`` as its command: what the cluster is asked for, for ``sbatch --test-only`` and for
    showing a job's script before it is submitted (submitit's ``_make_sbatch_string``)."""
    from submitit.slurm.slurm import _make_sbatch_string

    return _make_sbatch_string(command="true", folder=folder, **parameters)
