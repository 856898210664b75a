"""Errors a user can cause and fix.

A ``UserError`` carries one sentence that names the offending value and the fix. The entry
points print it without a stack trace and exit with status 2; anything else is a bug and keeps
its traceback.
"""
from __future__ import annotations


class UserError(ValueError):
    """A mistake in the command line, the config or the data, explained in one sentence."""


def unwrap_user_error(exc: BaseException) -> UserError | None:
    """Return the ``UserError`` behind ``exc`` (Hydra wraps errors raised while instantiating)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


class TrainingInterrupted(Exception):
    """Training stopped on a signal (SIGTERM, Ctrl-C) after writing a resumable checkpoint.

    The entry point prints the message and exits with ``128 + signum``, the shell's convention.
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


class TrainingDiverged(UserError):
    """A loss or the weights became NaN/Inf, or a loss stayed beyond its bound.

    A ``UserError``: the run ends with one line (the step, the loss, the last good checkpoint and
    what to change), and a sweep goes on with its next job.
    """

    def __init__(self, message: str, step: int, values: dict[str, float]) -> None:
        super().__init__(message)
        self.step, self.values = step, dict(values)
