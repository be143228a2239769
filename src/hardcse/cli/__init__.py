"""The ``hardcse`` command line (typer).

Each sub-command lives in its own module and registers itself on :data:`app`. There is one error
path for the whole command line (:func:`run`): errors a user can cause
(:class:`hardcse.errors.HardcseError`) and usage errors of typer/click print one sentence
(``error: ...``) and exit non-zero (2 for usage errors), Ctrl-C exits 130; never a traceback
for these. Every other exception is reported the same way (:func:`unexpected_error`): one
sentence naming the command, the operation and the file where there is one; ``--debug`` or
``HARDCSE_DEBUG=1`` shows the traceback instead. SIGTERM and SIGHUP stop a command as Ctrl-C
does, with exit status 143 and 129 (:mod:`hardcse.training.signals`: training saves a checkpoint
of the step in progress first).
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Sequence

import typer

from hardcse.errors import HardcseError

#: Environment variable that shows the traceback of an unexpected error (as ``--debug``).
DEBUG_ENV = "HARDCSE_DEBUG"
#: Options of the root command for this invocation (``--debug``), reset by :func:`run`.
_flags: dict[str, bool] = {}

app = typer.Typer(
    name="hardcse",
    help="Train sentence encoders without labels (SimCSE, ClusterNS, HSimCSE) and evaluate them on STS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: each option's text wraps across the terminal's width (rich's table gave it a
    # column two or three words wide at 80 columns); examples in the epilogs keep their lines.
    rich_markup_mode=None,
    context_settings={"max_content_width": 100, "help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"hardcse {version('hardcse')}")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            typer.echo("hardcse (not installed)")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(
        False, "--debug", help=f"Show the traceback of an unexpected error (same as {DEBUG_ENV}=1)."
    ),
) -> None:
    """Train sentence encoders without labels (SimCSE, ClusterNS, HSimCSE) and evaluate them on STS."""
    _flags["debug"] = debug


def _register() -> None:
    # Imported for their side effect of adding commands to `app`.
    from hardcse.cli import compare, convert, download, evaluate, mlm, train  # noqa: F401
    from hardcse.cli.examples import add_examples

    add_examples(app)


def _click_classes(name: str) -> tuple[type, ...]:
    """Exception class ``name`` of every click that may be in play: typer bundles its own
    (``typer._click``) and a separately installed click may also be imported."""
    found: list[type] = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            cls = getattr(__import__(module, fromlist=[name]), name, None)
        except ImportError:
            continue
        if isinstance(cls, type):
            found.append(cls)
    return tuple(found)


def _usage_sentence(err: BaseException) -> str:
    """A click usage error as one sentence, with where to find help."""
    message = err.format_message() if hasattr(err, "format_message") else str(err)  # type: ignore[attr-defined]
    message = " ".join(str(message).split()).rstrip(".")
    ctx = getattr(err, "ctx", None)
    path = getattr(ctx, "command_path", None) or "hardcse"
    return f"{message[:1].lower()}{message[1:]} (see '{path} --help')."


def _quiet_progress_bars(quiet: bool) -> None:
    """Turn the libraries' own progress bars (weights loading, encoding batches, datasets) off for
    --quiet and when standard error is a log file, where their carriage returns pile up.
    tqdm reads ``TQDM_DISABLE`` when it is imported, which has not happened yet here."""
    if quiet:
        import os

        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def quiet_library_logs() -> None:
    """Keep the libraries' informational warnings (checkpoint sorting, weight-loading reports)
    out of a command's output: hardcse reports what matters to the user itself."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    # torch's notes to library authors (e.g. about pickle protocols in checkpoints) are not for users.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\..*")


def _command(args: Sequence[str]) -> str:
    """The sub-command named in ``args`` (for messages), or ``hardcse`` itself."""
    names = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands if c.callback}
    return next((f"hardcse {a}" for a in args if a in names), "hardcse")


def _debugging() -> bool:
    if _flags.get("debug"):
        return True
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def unexpected_error(err: BaseException, command: str) -> tuple[str, int]:
    """An exception no check anticipated as (one sentence, exit status).

    A full disk is exit 3 as in training; a file the operating system refused (a name too long,
    a file where a directory must be, no permission) names the file, exit 2; anything else names
    the command and the error, exit 1, and says how to see the traceback.
    """
    from hardcse.safety import brief, brief_path, disk_full_message, is_disk_full

    filename = getattr(err, "filename", None)
    if is_disk_full(err):
        if not filename:
            return f"no space left on a device while {command} was writing; free some space and run it again.", 3
        doing = f"{command} was writing '{brief_path(filename)}'"
        return disk_full_message(filename, doing, "free some space and run it again"), 3
    if isinstance(err, OSError) and filename:
        if err.errno == errno.ENAMETOOLONG:
            return (
                f"{command}: the path '{brief_path(filename)}' is longer than the file system allows; "
                "choose a shorter name."
            ), 2
        reason = err.strerror or type(err).__name__
        return f"{command} could not use '{brief_path(filename)}' ({reason}); check the path.", 2
    detail = " ".join(str(err).split())
    detail = f"{type(err).__name__}: {brief(detail, 160)[1:-1]}" if detail else type(err).__name__
    return (
        f"{command} failed unexpectedly ({detail}); run it again with --debug (or {DEBUG_ENV}=1) to see where."
    ), 1


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    from hardcse.training.signals import exit_status, handling, received, signal_name

    args = list(sys.argv[1:] if argv is None else argv)
    _flags.clear()
    _quiet_progress_bars(not sys.stderr.isatty() or "--quiet" in args)
    _register()
    with handling():
        status, message = _run(args)
        signum = received()
    if message is not None:
        print(f"error: {message}", file=sys.stderr)
    elif status == 130 and signum is not None:
        # typer turns the KeyboardInterrupt a SIGTERM/SIGHUP raised into 130: give the signal's status.
        print(f"error: stopped by {signal_name(signum)}.", file=sys.stderr)
        return exit_status(signum)
    elif status == 130:
        print("error: interrupted.", file=sys.stderr)
    return status


def _run(args: list[str]) -> tuple[int, str | None]:
    """``app`` on ``args``: (exit status, the error sentence or ``None``)."""
    try:
        status = app(args=args, standalone_mode=False)
    except HardcseError as err:
        return err.exit_code, str(err)
    except KeyboardInterrupt as err:
        code = getattr(err, "exit_code", 130)
        return code, "interrupted." if code == 130 else f"stopped by {err}."
    except Exception as err:
        if isinstance(err, _click_classes("NoArgsIsHelpError")):
            print(err.ctx.get_help())  # type: ignore[attr-defined]
            return 2, None
        if isinstance(err, _click_classes("UsageError")):
            return 2, _usage_sentence(err)
        if isinstance(err, _click_classes("ClickException")):
            return int(getattr(err, "exit_code", 1)), _usage_sentence(err)
        if isinstance(err, _click_classes("Abort")):
            return 1, "aborted."
        if _debugging():
            raise
        return unexpected_error(err, _command(args))[::-1]
    # Non-standalone typer returns an Exit's code (130 after a KeyboardInterrupt it caught).
    return (status if isinstance(status, int) else 0), None


def main() -> None:
    """Entry point of the ``hardcse`` script."""
    sys.exit(run())
