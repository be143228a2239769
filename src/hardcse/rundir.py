"""Run directories: what hardcse may replace, and one process at a time in each.

A run directory (``hardcse train``/``mlm`` output) carries a marker file, ``.hardcse-run``, that
says which command made it. ``--overwrite`` replaces only a directory that is recognisably a
hardcse run of that kind (the marker, or for runs made before the marker existed, their
``config.yaml`` next to results, a start evaluation or checkpoints); never the working
directory, one of its parents, the home directory or ``/``. The old run is moved aside and
deleted only once the new run has started (:meth:`RunDirectory.started`); a run that fails
before that puts the old one back.

While a process writes into a run directory it holds an exclusive ``flock`` on
``.hardcse.lock`` there. The kernel drops the lock when the process dies, so a lock left by a
killed process is simply taken over; a second live process is refused in one sentence.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

from hardcse.errors import ConfigError

try:  # POSIX; elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

MARKER = ".hardcse-run"
LOCK = ".hardcse.lock"
# Files that identify a run directory written before the marker existed (train runs).
_LEGACY_EVIDENCE = ("results.json", "start.json", "checkpoints")


def protected_paths() -> set[Path]:
    """Directories ``--overwrite`` never replaces: ``/``, home, the working directory and its parents."""
    cwd = Path.cwd().resolve()
    return {Path("/").resolve(), Path.home().resolve(), cwd, *cwd.parents}


def run_kind(path: Path) -> str | None:
    """The command that made run directory ``path`` (``train``, ``mlm``, ...), or ``None``."""
    marker = path / MARKER
    if marker.is_file():
        try:
            return str(json.loads(marker.read_text(encoding="utf-8")).get("kind") or "")
        except (OSError, ValueError, AttributeError):
            return None
    config = path / "config.yaml"
    if config.is_file() and any((path / name).exists() for name in _LEGACY_EVIDENCE):
        try:
            import yaml

            values = yaml.safe_load(config.read_text(encoding="utf-8"))
        except Exception:  # noqa: BLE001 - any unreadable file is simply not a run
            return None
        if isinstance(values, dict) and {"recipe", "corpus", "model"} <= set(values):
            return "train"
    return None


def _try_lock(handle: IO[str]) -> bool:
    if fcntl is None:  # pragma: no cover
        return True
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def lock_holder(path: Path) -> str | None:
    """A description of the live process holding ``path``'s lock, or ``None`` if nobody does."""
    lock = path / LOCK
    if fcntl is None or not lock.is_file():
        return None
    try:
        with open(lock, encoding="utf-8") as handle:
            if _try_lock(handle):
                return None  # free (a killed process's lock is released by the kernel)
            who = handle.read().strip()
    except OSError:
        return None
    return who or "another process"


def _in_use(path: Path, option: str) -> ConfigError:
    return ConfigError(
        f"output directory '{path}' is in use by {lock_holder(path) or 'another process'} that is writing "
        f"to it; wait for it to finish or choose another {option}."
    )


def check_replaceable(path: Path, kind: str, option: str = "--output") -> None:
    """Refuse ``--overwrite`` of ``path`` unless it is a hardcse ``kind`` run that nobody is writing."""
    resolved = path.resolve()
    if resolved in protected_paths():
        raise ConfigError(
            f"refusing to overwrite '{path}': it is the working directory, one of its parents, the home "
            f"directory or '/'; choose a new {option} for the run."
        )
    found = run_kind(path)
    if found != kind:
        what = f"a hardcse {found} run, not a {kind} run" if found else f"not a hardcse {kind} run"
        raise ConfigError(
            f"refusing to overwrite '{path}': it is {what}, and --overwrite only replaces those; "
            f"move its files away or choose another {option}."
        )
    if lock_holder(path) is not None:
        raise _in_use(path, option)


def check_output_dir(path: Path, kind: str, *, overwrite: bool, resume: bool, option: str = "--output") -> Path:
    """Check ``path`` as the output of a new (or resumed) ``kind`` run, touching nothing.

    A non-empty directory needs ``overwrite`` (replace it) or ``resume`` (continue it); neither may
    touch a directory another process is writing to. The nearest existing ancestor must be writable.
    """
    from hardcse.safety import check_path_fits

    path = check_path_fits(path, option)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output '{path}' exists and is not a directory; choose another {option}.")
    busy = path.is_dir() and any(p.name != LOCK for p in path.iterdir())
    if busy:
        if not (overwrite or resume):
            raise ConfigError(
                f"output directory '{path}' already holds a run; pass --overwrite to replace it, "
                f"--resume to continue it, or choose another {option}."
            )
        if overwrite:
            check_replaceable(path, kind, option)
        elif lock_holder(path) is not None:
            raise _in_use(path, option)
        elif run_kind(path) not in (kind, None):
            raise ConfigError(f"'{path}' is a hardcse {run_kind(path)} run; it cannot be resumed as a {kind} run.")
    parent = next((p for p in [path, *path.parents] if p.exists()), None)
    if parent is not None:
        check_writable(path, parent, option)
    return path


def check_writable(target: Path, parent: Path, option: str = "--output") -> None:
    """Create and remove a scratch directory in ``parent``: permission bits alone do not tell
    (root ignores them; read-only mounts and pseudo file systems refuse anyway)."""
    try:
        Path(tempfile.mkdtemp(prefix=".hardcse-probe-", dir=parent)).rmdir()
    except OSError as err:
        raise ConfigError(
            f"'{target}' is not writable ({err.strerror or err} in '{parent}'); choose another {option}."
        ) from None


class RunDirectory:
    """The output directory of one run, created, marked and locked by :meth:`open`.

    ``overwrite`` moves an existing run aside (``.NAME.replaced-PID`` next to it); :meth:`started`
    deletes it once the new run has made progress, :meth:`close` with ``failed=True`` before that
    deletes the new directory and puts the old run back. A fresh directory whose run fails
    before it started is removed, so the same command can simply be run again.
    """

    def __init__(self, path: str | Path, kind: str, *, overwrite: bool = False, resume: bool = False) -> None:
        self.path = Path(path).expanduser()
        self.kind = kind
        self.overwrite = overwrite
        self.resume = resume
        self._handle: IO[str] | None = None
        self._aside: Path | None = None
        self._created = False
        self._started = False

    def open(self) -> RunDirectory:
        path = self.path
        if self.overwrite and not self.resume and path.is_dir() and any(path.iterdir()):
            check_replaceable(path, self.kind)
            aside = path.with_name(f".{path.name}.replaced-{os.getpid()}")
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(path, aside)
            self._aside = aside
        try:
            self._created = not path.exists()
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            self._restore()
            raise ConfigError(f"output directory '{path}' could not be created ({err.strerror}).") from None
        handle = open(path / LOCK, "a+", encoding="utf-8")  # noqa: SIM115 - held for the run's lifetime
        if not _try_lock(handle):
            # Another process created this directory at the same moment: leave everything as it is.
            handle.close()
            kept = f" (the run it replaced is kept in '{self._aside}')" if self._aside is not None else ""
            raise ConfigError(str(_in_use(path, "--output")).rstrip(".") + kept + ".")
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()} ({' '.join(sys.argv[:2])})\n")
        handle.flush()
        self._handle = handle
        marker = path / MARKER
        if not marker.is_file():
            from hardcse.io import atomic_write_json

            atomic_write_json(marker, {"kind": self.kind, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
        return self

    def started(self) -> None:
        """The new run has made progress: the run it replaced is deleted now."""
        self._started = True
        if self._aside is not None:
            shutil.rmtree(self._aside, ignore_errors=True)
            self._aside = None

    @property
    def has_started(self) -> bool:
        return self._started

    @property
    def replaced(self) -> bool:
        """True while an old run waits aside to be deleted or put back."""
        return self._aside is not None

    def _restore(self) -> None:
        if self._aside is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            os.replace(self._aside, self.path)
            self._aside = None

    def close(self, failed: bool = False) -> None:
        """Release the lock; after a failure before :meth:`started`, undo what :meth:`open` did."""
        if failed and not self._started:
            if self._aside is not None:
                self._restore()
            elif self._created and not self.resume:
                shutil.rmtree(self.path, ignore_errors=True)
        if self._handle is not None:
            # The lock file stays: unlinking it would let a waiting process lock a deleted file.
            self._handle.close()
            self._handle = None

    def __enter__(self) -> RunDirectory:
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(failed=exc_type is not None)
