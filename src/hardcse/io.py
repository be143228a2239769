"""Atomic file output: write to a temporary name beside the target, then rename.

An interrupted run therefore never leaves a truncated file that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _umask() -> int:
    # The process umask can only be read by setting it; set it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _as_created(path: Path, directory: bool = False) -> None:
    """Give a temporary file (0600) or directory (0700) the mode ``open``/``mkdir`` would have given
    it under the user's umask, so results and models are as readable as any other tool's output."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        _as_created(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, value: Any, strict: bool = False) -> None:
    """Write ``value`` as indented JSON. ``strict``: NaN and +-Infinity are written as ``null`` (standard
    JSON, which other tools parse); otherwise as Python's ``NaN``/``Infinity``, which ``json.loads`` reads back."""
    if strict:
        value = json.loads(json.dumps(value), parse_constant=lambda _: None)
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=False) + "\n")


def atomic_write_with(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Let ``writer`` fill a temporary file, then move it to ``path`` (for plots).

    The temporary name is unique (two writers never share it) and keeps the suffix, from which
    writers such as matplotlib take the format.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        writer(tmp)
        _as_created(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_directory(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Let ``writer`` fill a temporary directory, then swap it in for ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        writer(tmp)
        _as_created(tmp, directory=True)
        for inner in tmp.rglob("*"):  # libraries write some files with temporary-file modes too
            if not inner.is_symlink():
                _as_created(inner, directory=inner.is_dir())
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
