"""A run directory belongs to one run, and stays as it was until a new run in it is accepted.

:class:`RunDirLock` locks it; replacing a run needs ``overwrite=true``; :class:`RunDirBackup` undoes a refused start.
"""
from __future__ import annotations

import atexit
import logging
import os
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock, Timeout
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from gan_lab import slurm
from gan_lab.constraints import check_value
from gan_lab.errors import TrainingDiverged, UserError
from gan_lab.fs import DiskFull, atomic_write, atomic_write_text, process_alive, remove_orphan_temp_files

log = logging.getLogger("gan_lab")

#: the lock a training (or a sweep) holds on its directory, and the record of who holds it
LOCK_NAME, OWNER_NAME = ".run.lock", ".run.lock.owner"
#: the folder an old run's files wait in (``.replaced-run.<pid>``) until the new run's first batch
ASIDE_PREFIX = ".replaced-run."
#: top-level files larger than this are not saved for a refusal (a long ``metrics.csv`` is far smaller)
SAVED_FILE_LIMIT = 256 * 2**20


def secondary_process() -> bool:
    """Whether this is an extra process (rank > 0) of a multi-process run; process 0 owns the run directory."""
    return any(int(os.environ.get(k) or 0) > 0 for k in ("LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "RANK",
                                                         "SLURM_PROCID"))


def holds_run(folder: Path) -> bool:
    """Whether ``folder`` holds a run: its checkpoints or its ``metrics.json``."""
    return (folder / "checkpoints").is_dir() or (folder / "metrics.json").is_file()


def runs_under(folder: Path) -> list[Path]:
    """The run directories in ``folder`` (itself included), e.g. the jobs of a sweep."""
    found = []
    for root, dirs, _files in os.walk(folder):
        here = Path(root)
        if holds_run(here):
            found.append(here)
            dirs[:] = []
        else:
            dirs[:] = [d for d in dirs if not d.startswith(".")]
    return sorted(found)


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


class RunDirLock:
    """The lock of a run (or sweep) directory, held from its claim until training (a sweep: the process) ends."""

    held: dict[str, tuple[FileLock, bool]] = {}  # resolved folder -> (lock, whether this process created its file)
    _at_exit = False

    @classmethod
    def acquire(cls, folder: Path, key: str = "hydra.run.dir") -> bool:
        """Take ``folder``'s lock without waiting (:class:`UserError` when another process holds it);
        ``False`` when this process already held it."""
        name = str(folder.resolve())
        if name in cls.held:
            return False
        lock_file = folder / LOCK_NAME
        try:
            folder.mkdir(parents=True, exist_ok=True)
            created = not lock_file.exists()
            lock = FileLock(lock_file, timeout=0)
            lock.acquire()
        except Timeout:
            raise UserError(f"the {'sweep' if 'sweep' in key else 'run'} directory {folder} is in use by another "
                            f"training ({owner_of(folder)}); wait until it ends, or choose another directory "
                            f"with {key}=<path>.") from None
        except OSError as exc:
            raise UserError(f"the run directory {folder} is not writable ({exc.strerror}); choose another with "
                            f"{key}=<path>.") from None
        if not cls._at_exit:
            cls._at_exit = bool(atexit.register(cls.release_all))  # a sweep's lock is held until the process ends
        cls.held[name] = (lock, created)
        job = slurm.job_id()  # this process, as the owner record names it
        where = f"process {os.getpid()} on {socket.gethostname()}" + (f", SLURM job {job}" if job else "")
        atomic_write_text(f"{where}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n", folder / OWNER_NAME)
        return True

    @classmethod
    def release(cls, folder: Path, discard: bool = False) -> None:
        """Let ``folder`` go; ``discard``: also remove the lock file when this process created it."""
        lock, created = cls.held.pop(str(folder.resolve()), (None, False))
        if lock is None:
            return
        try:
            (folder / OWNER_NAME).unlink(missing_ok=True)
            if discard and created:
                (folder / LOCK_NAME).unlink(missing_ok=True)
        finally:
            lock.release()

    @classmethod
    def release_all(cls) -> None:
        for name in list(cls.held):
            cls.release(Path(name))

    @classmethod
    def in_use(cls, folder: Path) -> bool:
        """Whether another process holds ``folder``'s lock now."""
        if str(folder.resolve()) in cls.held or not (folder / LOCK_NAME).is_file():
            return False
        try:
            with FileLock(folder / LOCK_NAME, timeout=0):
                return False
        except Timeout:
            return True


def owner_of(folder: Path) -> str:
    try:
        line = (folder / OWNER_NAME).read_text().strip()
    except OSError:
        line = ""
    return line or "a process that did not record itself"


def _check_clearable(folder: Path, key: str) -> None:
    """Refuse ``overwrite=true`` on the working, home or root directory (or one holding the working directory)."""
    resolved = folder.resolve()
    if resolved in (Path.home().resolve(), Path(resolved.anchor)) or _inside(Path.cwd(), resolved):
        raise UserError(f"overwrite=true would delete everything in {folder}, which is (or holds) the working, home "
                        f"or root directory; give the run a directory of its own with {key}=<path>.")


def replaces_run(run_dir: Path, ckpt_path: Any, overwrite: Any, refuse: bool = True) -> bool:
    """Whether a run starting in ``run_dir`` replaces the run already there (``overwrite=true``).

    A resume from a checkpoint inside ``run_dir`` or a requeued SLURM job continues that run; any
    other run into a directory holding one is refused (with ``refuse``) unless ``overwrite``."""
    overwrite = check_value(overwrite, bool, "overwrite")
    if slurm.requeued() or not holds_run(run_dir):
        return False
    if ckpt_path is not None and _inside(Path(str(ckpt_path)), run_dir):  # a resume of the run there
        if overwrite:
            raise UserError(f"overwrite=true would delete the run in {run_dir}, and with it ckpt_path={ckpt_path}; "
                            f"drop overwrite to continue that run there, or resume into a new directory "
                            f"(hydra.run.dir=<path>).")
        return False
    if overwrite:
        _check_clearable(run_dir, "hydra.run.dir")
        return True
    if not refuse:
        return False
    holds = " and ".join(n for n in ("checkpoints/", "metrics.json") if (run_dir / n).exists())
    last = run_dir / "checkpoints" / "last.ckpt"
    if ckpt_path is None:
        resume = f", continue it with ckpt_path={last}" if last.is_file() else ""
        raise UserError(f"the run directory {run_dir} already holds a run ({holds}); choose a new directory with "
                        f"hydra.run.dir=<path>{resume}, or add overwrite=true to replace that run.")
    raise UserError(f"the run directory {run_dir} already holds another run ({holds}) than the one of ckpt_path="
                    f"{ckpt_path}; resume into a new directory with hydra.run.dir=<path>, or add overwrite=true to "
                    f"replace that run.")


def claim_sweep_dir(sweep_dir: Path, overwrite: Any) -> None:
    """Refuse a sweep into a ``hydra.sweep.dir`` holding runs, or with ``overwrite=true`` empty it
    (refused while one of those runs is still training)."""
    overwrite = check_value(overwrite, bool, "overwrite")
    runs = runs_under(sweep_dir)
    if not runs or slurm.requeued():
        return
    if not overwrite:
        names = [str(r.relative_to(sweep_dir)) for r in runs]
        listed = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise UserError(f"hydra.sweep.dir={sweep_dir} already holds the runs of a sweep ({listed}); choose another "
                        f"hydra.sweep.dir, or add overwrite=true to replace them.")
    _check_clearable(sweep_dir, "hydra.sweep.dir")
    for run in runs:
        if RunDirLock.in_use(run):
            raise UserError(f"the run directory {run} of hydra.sweep.dir={sweep_dir} is in use by another training "
                            f"({owner_of(run)}); wait until it ends, or choose another hydra.sweep.dir.")
    for entry in sweep_dir.iterdir():
        if entry.name not in (LOCK_NAME, OWNER_NAME):
            _remove(entry)
    log.info("overwrite=true: the runs of %s were removed", sweep_dir)


def _remove(path: Path, ignore_errors: bool = False) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=ignore_errors)
    else:
        path.unlink(missing_ok=True)


def _every_path(folder: Path, skip: Path | None) -> set[Path]:
    paths = set()
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        dirs[:] = [d for d in dirs if here / d != skip]
        paths.update(here / d for d in dirs)
        paths.update(here / f for f in files)
    return paths


def _job_log(run_dir: Path) -> Path | None:
    """The log file Hydra writes for this job in ``run_dir`` (open while the run trains), if any."""
    if not HydraConfig.initialized():
        return None
    path = Path(HydraConfig.get().runtime.output_dir) / f"{HydraConfig.get().job.name}.log"
    return path if _inside(path, run_dir) else None


def _write_back(files: dict[Path, bytes]) -> None:
    for f, data in files.items():
        if not f.is_file() or f.read_bytes() != data:
            atomic_write(f, lambda fh, data=data: fh.write(data))


def _rewrite_in_place(path: Path, data: bytes) -> None:
    """Replace ``path``'s content keeping its inode: a log handler appending to it goes on doing so."""
    with open(path, "r+b") as fh:
        fh.write(data)
        fh.truncate()


class RunDirBackup:
    """What a run's start changes in its directory, kept until the run is accepted.

    :meth:`take` saves what Hydra rewrites (``.hydra/``, the job's log); :meth:`hold` saves the
    top-level files and the file list, and moves an overwritten run aside. :meth:`restore` puts them
    back; :meth:`accept` (the first batch) drops them."""

    saved: dict[str, Any] | None = None  # Hydra's part
    held: dict[str, Any] | None = None  # the rest
    stage: str | None = None  # None / "checking": checks run; "checked": training starts; "accepted"

    @classmethod
    def take(cls, run_dir: Path, config: DictConfig) -> None:
        cls.saved, cls.held, cls.stage = None, None, "checking"
        if not run_dir.is_dir():
            return  # a new run directory: nothing to keep
        subdir = config.hydra.output_subdir
        folder = run_dir / subdir if subdir is not None else None
        log_file = run_dir / f"{config.hydra.job.name}.log"
        cls.saved = {
            "folder": folder,
            "folder_existed": folder is not None and folder.is_dir(),
            "files": {f: f.read_bytes() for f in folder.iterdir() if f.is_file()} if folder and folder.is_dir() else {},
            "log": log_file,
            "log_size": log_file.stat().st_size if log_file.is_file() else None,
        }

    @classmethod
    def hold(cls, run_dir: Path | None, replace: bool = False) -> None:
        """After the checks: save what starting training may change in ``run_dir`` (``None``: not
        owned by this process); with ``replace``, move the old run's files aside."""
        cls.stage = "checked"
        if run_dir is None:
            return
        held = cls.held = {"run_dir": run_dir, "aside": None, "log_head": None, "files": {}, "paths": set()}
        job_log = _job_log(run_dir)
        if replace:
            aside = held["aside"] = run_dir / f"{ASIDE_PREFIX}{os.getpid()}"
            aside.mkdir()
            subdir = HydraConfig.get().output_subdir if HydraConfig.initialized() else None  # Hydra's folder
            keep = {LOCK_NAME, OWNER_NAME, "metrics.json.lock", None if subdir is None else str(subdir),
                    job_log.name if job_log is not None else None}
            for entry in sorted(run_dir.iterdir()):
                if entry.name not in keep and not entry.name.startswith(ASIDE_PREFIX):
                    os.rename(entry, aside / entry.name)
            saved = cls.saved
            if job_log is not None and saved and saved["log"] == job_log and saved["log_size"]:
                data = job_log.read_bytes()  # the old run's lines, then this run's
                held["log_head"] = data[:saved["log_size"]]
                _rewrite_in_place(job_log, data[saved["log_size"]:])
            log.info("overwrite=true: the run in %s is replaced", run_dir)
        for entry in run_dir.iterdir():
            if (entry.is_file() and not entry.is_symlink() and entry.name not in (LOCK_NAME, OWNER_NAME)
                    and entry != job_log and entry.stat().st_size <= SAVED_FILE_LIMIT):
                held["files"][entry] = entry.read_bytes()
        held["paths"] = _every_path(run_dir, skip=held["aside"])

    @classmethod
    def refused(cls, exc: BaseException) -> bool:
        """Whether ``exc`` refuses the run: anything during the checks, or a ``UserError`` (not a
        divergence or full disk) before the first batch."""
        if cls.stage == "accepted":
            return False
        if cls.stage != "checked":
            return True
        return isinstance(exc, UserError) and not isinstance(exc, (TrainingDiverged, DiskFull))

    @classmethod
    def restore(cls) -> None:
        saved, held = cls.saved, cls.held
        cls.saved = cls.held = cls.stage = None
        if held is not None:
            cls._restore_held(held)
        if saved is None:
            return
        folder = saved["folder"]
        if folder is not None and folder.is_dir():
            for f in folder.iterdir():
                if f.is_file() and f not in saved["files"]:
                    f.unlink()  # written by Hydra for the refused run
            if not saved["folder_existed"] and not any(folder.iterdir()):
                folder.rmdir()
        _write_back(saved["files"])
        log_file, size = saved["log"], saved["log_size"]
        if size is None:
            log_file.unlink(missing_ok=True)
        elif log_file.is_file() and log_file.stat().st_size > size:
            os.truncate(log_file, size)  # drop the refused run's lines

    @staticmethod
    def _restore_held(held: dict[str, Any]) -> None:
        run_dir, aside = held["run_dir"], held["aside"]
        for path in sorted(_every_path(run_dir, skip=aside), key=lambda p: len(p.parts), reverse=True):
            if path not in held["paths"] and path.name not in (LOCK_NAME, OWNER_NAME):
                _remove(path, ignore_errors=True)  # made by the refused run
        _write_back(held["files"])
        if aside is not None and aside.is_dir():
            for entry in sorted(aside.iterdir()):
                _remove(run_dir / entry.name)
                os.rename(entry, run_dir / entry.name)
            aside.rmdir()
        if held["log_head"] is not None:
            job_log = _job_log(run_dir)
            if job_log is not None and job_log.is_file():
                _rewrite_in_place(job_log, held["log_head"] + job_log.read_bytes())

    @classmethod
    def accept(cls) -> None:
        """The first batch starts: drop what was saved, delete the replaced run's files and remove
        temporary files a killed writer left."""
        held = cls.held
        cls.saved = cls.held = None
        cls.stage = "accepted"
        if held is None:
            return
        run_dir = held["run_dir"]
        for entry in run_dir.glob(f"{ASIDE_PREFIX}*"):
            pid = entry.name[len(ASIDE_PREFIX):]
            if entry == held["aside"] or not (pid.isdigit() and process_alive(int(pid))):
                shutil.rmtree(entry, ignore_errors=True)  # ours, or left by a process killed as it started
        removed = [*remove_orphan_temp_files(run_dir / "checkpoints", (".ckpt",)),
                   *remove_orphan_temp_files(run_dir, ("metrics.csv", "metrics.json", OWNER_NAME)),
                   *remove_orphan_temp_files(run_dir / ".hydra", (".yaml",))]
        if removed:
            log.info("removed %d temporary file(s) a killed process left: %s", len(removed),
                     ", ".join(str(p) for p in removed))

    @classmethod
    def finish(cls) -> None:
        """The run ended or was refused: drop what is held (a crash before the first batch keeps its changes)."""
        if cls.held is not None:
            cls.accept()
        cls.saved = cls.held = cls.stage = None


@contextmanager
def keep_run_dir_until_accepted(run_dir: Path | None = None) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block (``None`` in extra processes); a refusal before the
    first batch puts back what was changed in the directory."""
    discard = False
    try:
        if run_dir is not None:
            RunDirLock.acquire(run_dir)
        yield
    except BaseException as exc:
        if RunDirBackup.refused(exc):
            RunDirBackup.restore()
            discard = True
        raise
    finally:
        RunDirBackup.finish()
        if run_dir is not None:
            RunDirLock.release(run_dir, discard=discard)
