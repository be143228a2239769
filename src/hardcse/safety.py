"""Checks shared by every command: values in messages, paths the OS can hold, what may be replaced,
bounded YAML and write failures on a full disk.

* :func:`brief` prints any value in at most a line (an error message never prints a whole value:
  a list of a million items, or a YAML alias bomb, stays a few dozen characters).
* :func:`check_path_fits` refuses a path whose names the file system cannot hold, before anything
  is created; :func:`check_directory_option` a directory option that names a file.
* :func:`check_replace_target` is the rule of every command that replaces a directory: never the
  working directory, one of its parents, the home directory or ``/``, never an input of the same
  command or a directory holding one, and only a directory that is recognisably the command's own
  output (:func:`check_inputs_outside` alone for a run's ``--overwrite``).
* :func:`load_yaml_text` reads YAML with its size bounded: the text, and the values its aliases
  expand to, so a small file cannot use gigabytes or minutes.
* :func:`is_disk_full` recognises a write that failed for want of space, whatever library raised
  it (``OSError`` ENOSPC, torch's ``PytorchStreamWriter`` failures, safetensors' ``StorageFull``),
  and :class:`DiskFull` says so in one sentence with exit status 3.
"""

from __future__ import annotations

import errno
import os
import reprlib
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hardcse.errors import ConfigError, HardcseError
from hardcse.rundir import protected_paths

#: The longest value :func:`brief` prints.
BRIEF_LIMIT = 80
#: YAML configuration text larger than this is refused (hardcse's own files are a few KB).
YAML_MAX_BYTES = 1 << 20
#: At most this many values after YAML aliases are expanded (a configuration has about a hundred).
YAML_MAX_VALUES = 100_000
#: Path limits of the usual Linux file systems (``NAME_MAX``, ``PATH_MAX``) when the OS does not say.
NAME_MAX = 255
PATH_MAX = 4096
#: Free space below which a failed write is taken for a full disk.
FULL_BELOW_BYTES = 1 << 20


class DiskFull(HardcseError):
    """A write failed because the file system is full (exit status 3, as a training failure)."""

    exit_code = 3


_REPR = reprlib.Repr()
_REPR.maxstring = BRIEF_LIMIT
_REPR.maxother = BRIEF_LIMIT
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 6
_REPR.maxlevel = 3


def brief(value: Any, limit: int = BRIEF_LIMIT) -> str:
    """``repr(value)`` cut to at most ``limit`` characters (nested and long values elided with ...)."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def brief_path(path: str | os.PathLike[str], limit: int = BRIEF_LIMIT) -> str:
    """A path for a message: as given, or its start and end around '...' when it is very long."""
    text = os.fspath(path)
    if len(text) <= limit:
        return text
    keep = (limit - 3) // 2
    return f"{text[:keep]}...{text[-keep:]}"


# -- paths ----------------------------------------------------------------------------------------
def _limit(path: Path, name: str, default: int) -> int:
    existing = next((p for p in [path, *path.parents] if p.exists()), Path("/"))
    try:
        return int(os.pathconf(existing, name))
    except (OSError, ValueError):
        return default


def check_path_fits(path: str | os.PathLike[str], option: str) -> Path:
    """``path`` (user-expanded), or :class:`ConfigError` when one of its names or the whole path is
    longer than the file system allows (it could never be created or opened)."""
    path = Path(path).expanduser()
    name_max = _limit(path, "PC_NAME_MAX", NAME_MAX)
    for part in path.parts:
        if len(part.encode("utf-8", "surrogateescape")) > name_max:
            raise ConfigError(
                f"{option} '{brief_path(path)}' has a name of {len(part)} characters, longer than the file system "
                f"allows ({name_max}); choose a shorter name."
            )
    whole = len(os.fsencode(path.absolute()))
    path_max = _limit(path, "PC_PATH_MAX", PATH_MAX)
    if whole >= path_max:
        raise ConfigError(
            f"{option} '{brief_path(path)}' is {whole} bytes long, longer than the file system allows ({path_max}); "
            "choose a shorter path."
        )
    return path


def check_directory_option(path: str | os.PathLike[str], option: str) -> Path:
    """``path`` as a directory option: it fits the file system and, where it exists, is a directory."""
    path = check_path_fits(path, option)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} '{brief_path(path)}' is a file, not a directory; choose a directory.")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise ConfigError(
                f"{option} '{brief_path(path)}' cannot be a directory: '{brief_path(parent)}' is a file; "
                "choose another path."
            )
    return path


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def input_paths(values: Iterable[Any], data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The existing files and directories named by ``values`` (paths or ``datasets`` names;
    relative ones also looked up in ``data_dir``), resolved."""
    found: list[Path] = []
    for value in values:
        if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
            continue
        candidates = [Path(value).expanduser()]
        if data_dir is not None and not candidates[0].is_absolute():
            candidates.append(Path(data_dir).expanduser() / value)
        for candidate in candidates:
            try:
                if candidate.exists():
                    found.append(candidate.resolve())
            except OSError:  # a name too long to be a path is a dataset name, not an input here
                continue
    return found


def check_inputs_outside(target: Path, inputs: Iterable[Path], option: str, what: str) -> None:
    """Refuse to replace ``target`` when an input of the command is ``target`` or inside it."""
    root = target.expanduser().resolve()
    for item in inputs:
        if _inside(item, root):
            raise ConfigError(
                f"refusing to replace '{brief_path(target)}': it holds '{brief_path(item)}', which this {what} "
                f"reads; move that file out of it first or choose another {option}."
            )


def check_replace_target(
    target: Path,
    *,
    option: str,
    what: str,
    own: bool,
    inputs: Iterable[Path] = (),
) -> None:
    """The rule for replacing the existing, non-empty directory ``target``.

    Refused: a protected path (:func:`protected_paths`), an input of the command or a directory
    that holds one (``inputs``, resolved), one of an input's parents, and any directory that is not
    recognisably the command's own output (``own`` false).
    """
    root = target.expanduser().resolve()
    if root in protected_paths():
        raise ConfigError(
            f"refusing to replace '{brief_path(target)}': it is the working directory, one of its parents, the home "
            f"directory or '/'; choose a new {option}."
        )
    inputs = list(inputs)
    for item in inputs:
        if _inside(root, item) and root != item:
            continue  # a folder inside an input directory is not the input itself
        if root == item or root in item.parents:
            raise ConfigError(
                f"refusing to replace '{brief_path(target)}': it is or holds '{brief_path(item)}', the input of this "
                f"{what}; choose another {option}."
            )
    if not own:
        raise ConfigError(
            f"refusing to replace '{brief_path(target)}': it holds files that this {what} did not write, and only its "
            f"own output is replaced; move them away or choose another {option}."
        )


# -- YAML -----------------------------------------------------------------------------------------
def _count_values(value: Any, budget: int) -> int:
    """The number of values in ``value`` with shared (aliased) parts counted each time they
    appear, stopping once ``budget`` is passed (so a bomb is counted in bounded time)."""
    count = 0
    stack = [value]
    while stack:
        item = stack.pop()
        count += 1
        if count > budget:
            return count
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set)):
            stack.extend(item)
    return count


def load_yaml_text(text: str, source: str) -> Any:
    """``yaml.safe_load(text)`` with the text and the values its aliases expand to bounded.

    Raises :class:`ConfigError` (one sentence) for text over :data:`YAML_MAX_BYTES` or more than
    :data:`YAML_MAX_VALUES` values once aliases are expanded; YAML syntax errors propagate as
    ``yaml.YAMLError`` for the caller to word.
    """
    import yaml

    if len(text) > YAML_MAX_BYTES:
        raise ConfigError(f"{source} is {len(text)} characters long; a configuration is at most {YAML_MAX_BYTES}.")
    values = yaml.safe_load(text)
    if _count_values(values, YAML_MAX_VALUES) > YAML_MAX_VALUES:
        raise ConfigError(
            f"{source} expands to more than {YAML_MAX_VALUES} values (YAML aliases repeat a part many times); "
            "write the values out instead."
        )
    return values


# -- full disks -----------------------------------------------------------------------------------
_FULL_WORDS = ("no space left", "storagefull", "disk quota exceeded", "code: 28,", "errno 28")
_WRITE_WORDS = ("pytorchstreamwriter", "inline_container", "unexpected pos", "file write failed")


def mount_point(path: str | os.PathLike[str]) -> Path:
    """The mount point of the file system holding ``path`` (or its nearest existing parent)."""
    current = Path(path).expanduser().absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    while not os.path.ismount(current) and current != current.parent:
        current = current.parent
    return current


def _free_bytes(path: str | os.PathLike[str]) -> int | None:
    try:
        return shutil.disk_usage(mount_point(path)).free
    except OSError:
        return None


def is_disk_full(err: BaseException, path: str | os.PathLike[str] | None = None) -> bool:
    """True when ``err`` (or an error it was raised from) is a write that failed for want of space.

    ``OSError`` ENOSPC/EDQUOT count at once; a library's write failure that names no errno
    (torch's ``PytorchStreamWriter``) counts when the file system of ``path`` is (nearly) full.
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(current).lower()
        if any(word in text for word in _FULL_WORDS):
            return True
        if path is not None and any(word in text for word in _WRITE_WORDS):
            free = _free_bytes(path)
            if free is not None and free < FULL_BELOW_BYTES:
                return True
        current = current.__cause__ or current.__context__
    return False


def disk_full_message(path: str | os.PathLike[str], doing: str, then: str) -> str:
    """ "no space left on the device of MOUNT while DOING; THEN." as one sentence."""
    return f"no space left on the device of '{brief_path(mount_point(path))}' while {doing}; {then}."
