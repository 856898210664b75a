"""Errors a user can cause and fix.

Entry points print a ``UserError`` as one line and exit with status 2; anything else keeps its traceback.
"""
from __future__ import annotations

import errno
import sys
from typing import Any, Callable, Iterator


class UserError(ValueError):
    """A mistake in the command line, the config or the data, explained in one sentence."""


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc`` and the exceptions behind it, through causes and contexts (each once)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        yield exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__


def out_of_space(exc: BaseException | None) -> OSError | None:
    """The "no space left" (or "quota exceeded") ``OSError`` behind ``exc``, through causes and contexts, or None."""
    return next((e for e in _chain(exc) if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)), None)


def unwrap_user_error(exc: BaseException) -> UserError | None:
    """The ``UserError`` behind ``exc``, through causes and contexts, or parsed from a ``ddp_spawn`` traceback;
    a full disk is one too."""
    for cause in _chain(exc):
        if isinstance(cause, UserError):
            return cause
        if type(cause).__name__ == "ProcessRaisedException":  # a ddp_spawn worker's: its traceback's last line
            name, _, message = (str(cause).strip().splitlines() or [""])[-1].partition(": ")
            cls = globals().get(name.rsplit(".", 1)[-1]) if name.startswith(f"{__name__}.") else None
            if isinstance(cls, type) and issubclass(cls, UserError) and message:
                return UserError(message)
    full = out_of_space(exc)
    if full is None:
        return None
    where = f"the disk holding {full.filename}" if full.filename else "the disk written to"
    return UserError(f"{where} is full ({full.strerror or 'no space left'}): free space there (or write elsewhere) "
                     f"and run the command again.")


def yaml_problem(exc: BaseException) -> str:
    """What a YAML parser (PyYAML, OmegaConf) found wrong in a file, in a few words with the line."""
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None)
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}"
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class TrainingInterrupted(Exception):
    """Training stopped on a signal (SIGTERM, Ctrl-C) after writing a resumable checkpoint; exits ``128 + signum``."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


class SetupInterrupted(TrainingInterrupted):
    """Ctrl-C stopped data preparation before training; nothing half-written was kept."""


class TrainingDiverged(UserError):
    """A loss or the weights became NaN/Inf, or a loss stayed beyond its bound; a sweep goes on with its next job."""

    def __init__(self, message: str, step: int, values: dict[str, float]) -> None:
        super().__init__(message)
        self.step, self.values = step, dict(values)


def report_user_error(exc: BaseException) -> bool:
    """Print a user's mistake as one line on stderr; False when ``exc`` is a bug (keep its traceback)."""
    user = unwrap_user_error(exc)
    if user is not None:
        print(f"gan_lab: error: {user}", file=sys.stderr)
    return user is not None


def exit_on_user_error(work: Callable[..., Any], *args: Any, interrupted: str | None = None) -> Any:
    """Run an entry point's ``work``: a :class:`UserError` exits 2, a :class:`TrainingInterrupted`
    ``128 + signum`` and, when ``interrupted`` is given, Ctrl-C exits 130; each after one line."""
    try:
        return work(*args)
    except TrainingInterrupted as exc:
        print(f"gan_lab: {exc}", file=sys.stderr)
        sys.exit(128 + exc.signum)
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        print(f"gan_lab: {interrupted}", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - user errors become one line, bugs keep their trace
        if not report_user_error(exc):
            raise
        sys.exit(2)
