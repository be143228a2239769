"""User-facing errors.

Anything a user can cause (a missing file, a malformed line, a bad option) is raised as a
:class:`HardcseError` with one sentence saying what is wrong, where, and what to do. The CLI
prints that sentence and exits non-zero; it never shows a traceback for these.
"""

from __future__ import annotations


class HardcseError(Exception):
    """An error caused by the user's input, reported as one clear sentence."""

    exit_code: int = 2


class DataError(HardcseError):
    """Missing, empty or malformed data files."""


class ConfigError(HardcseError):
    """An invalid configuration value, preset, recipe or option combination."""


class TrainingError(HardcseError):
    """Training cannot go on (for example the loss became NaN)."""

    exit_code = 3


class Interrupted(HardcseError):
    """The user interrupted the command (Ctrl-C); exit status 130 as for SIGINT.

    :func:`hardcse.train` turns a ``KeyboardInterrupt`` into this error, whose message says what
    was kept and how to continue. (It is deliberately not a ``KeyboardInterrupt`` itself: typer
    would swallow it into a bare exit status.)
    """

    exit_code = 130
