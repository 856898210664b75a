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
