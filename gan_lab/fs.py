"""Filesystem helpers shared by every layer: writability probes, atomic writes, file locks.

An atomic write fsyncs ``.<target>.<host>-<pid>.<random>.tmp`` beside the target, then ``os.replace``s it over
the target; a full disk raises :class:`DiskFull`.
"""
from __future__ import annotations

import hashlib
import os
import re
import socket
import tempfile
import time
import zipfile
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import torch
from filelock import FileLock

from gan_lab.errors import UserError, out_of_space


class DiskFull(UserError, OSError):
    """A write ran out of space (or quota); the file it was to replace is intact. Also an ``OSError`` (errno, file)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def write_problem(folder: Path | str) -> str | None:
    """Why ``folder`` cannot be created and written in (tried with a temporary file), or ``None``."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write_test"):
            return None
    except OSError as exc:
        existing = next((p for p in (folder, *folder.absolute().parents) if p.exists()), folder)
        if existing.exists() and not existing.is_dir():
            return f"{'it' if existing == folder else existing} is a file"
        return (exc.strerror or str(exc)).lower()


def host_tag() -> str:
    """8 hex digits naming this machine and its pid namespace (where a temporary file's pid is valid)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return hashlib.sha256(f"{socket.gethostname()}|{namespace}".encode()).hexdigest()[:8]


#: this machine in temporary file names
HOST_TAG = host_tag()
#: ``.<target>.<host>-<pid>.<random>.tmp`` of :func:`atomic_write` (host and pid optional)
TEMP_NAME = re.compile(r"^\.(?P<target>.+?)\.(?:(?P<host>[0-9a-f]{8})-(?P<pid>\d+)\.)?[a-z0-9_]{8}\.tmp$")
#: a temporary file untouched for this long has no writer, wherever it was written
ORPHAN_AGE_S = 24 * 3600


UMASK = os.umask(0)
os.umask(UMASK)


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None], mode: str = "wb") -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then move it over ``path``; a full disk
    is :class:`DiskFull`, naming ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{HOST_TAG}-{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~UMASK)  # as open() would create it (mkstemp's file is private to its owner)
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        full = None if isinstance(exc, DiskFull) else out_of_space(exc)
        if full is None:
            raise
        kept = f"; the previous {path.name} is intact" if path.exists() else ""
        error = DiskFull(f"the disk holding {path} is full ({full.strerror or 'no space left'}): it could not be "
                         f"written{kept}; free space there (or write elsewhere) and try again.")
        error.errno, error.strerror, error.filename = full.errno, full.strerror, str(path)
        raise error from None
    return path


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (one of another user counts)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    return True


def remove_orphan_temp_files(folder: str | os.PathLike, targets: tuple[str, ...]) -> list[Path]:
    """Remove :func:`atomic_write`'s temporary files in ``folder`` for targets ending with one of ``targets``
    whose writer is gone (a dead process here, or untouched for :data:`ORPHAN_AGE_S`); returns the files removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        match = TEMP_NAME.match(entry.name)
        if match is None or not match["target"].endswith(targets):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            idle = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if (match["host"] == HOST_TAG and not process_alive(int(match["pid"]))) or idle > ORPHAN_AGE_S:
            with suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically."""
    return atomic_write(path, lambda fh: torch.save(obj, fh))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda fh: fh.write(text), mode="w")


def zip_damage(path: str | os.PathLike) -> str | None:
    """Why the zip archive at ``path`` (``torch.save``'s format) is damaged, or ``None`` when every member
    matches its CRC-32 (or the file is not a zip archive). Reads the whole file."""
    try:
        if not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
        return f"its zip structure is broken: {exc}"
    except OSError as exc:
        return f"it could not be read back: {exc.strerror or exc}"
    return None if bad is None else f"the member {bad} fails its CRC-32 check"


@contextmanager
def locked(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` for a read-modify-write of ``path``; the lock file stays."""
    lock_path = Path(f"{path}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock_path):
        yield

