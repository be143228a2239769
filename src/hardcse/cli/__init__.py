"""The ``hardcse`` command line (typer).

Each sub-command lives in its own module and registers itself on :data:`app`. There is one error
path for the whole command line (:func:`run`): errors a user can cause
(:class:`hardcse.errors.HardcseError`) and usage errors of typer/click print one sentence
(``error: ...``) and exit non-zero (2 for usage errors), Ctrl-C exits 130; never a traceback
for these.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

from hardcse.errors import HardcseError

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
) -> None:
    """Train sentence encoders without labels (SimCSE, ClusterNS, HSimCSE) and evaluate them on STS."""


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


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    _quiet_progress_bars(not sys.stderr.isatty() or "--quiet" in args)
    _register()
    try:
        status = app(args=args, standalone_mode=False)
    except HardcseError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("error: interrupted.", file=sys.stderr)
        return 130
    except Exception as err:
        if isinstance(err, _click_classes("NoArgsIsHelpError")):
            print(err.ctx.get_help())  # type: ignore[attr-defined]
            return 2
        if isinstance(err, _click_classes("UsageError")):
            print(f"error: {_usage_sentence(err)}", file=sys.stderr)
            return 2
        if isinstance(err, _click_classes("ClickException")):
            print(f"error: {_usage_sentence(err)}", file=sys.stderr)
            return int(getattr(err, "exit_code", 1))
        if isinstance(err, _click_classes("Abort")):
            print("error: aborted.", file=sys.stderr)
            return 1
        raise
    # Non-standalone typer returns an Exit's code (130 after a KeyboardInterrupt it caught).
    if status == 130:
        print("error: interrupted.", file=sys.stderr)
    return status if isinstance(status, int) else 0


def main() -> None:
    """Entry point of the ``hardcse`` script."""
    sys.exit(run())
