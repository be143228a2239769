"""The ``hardcse`` command line (typer).

Each sub-command lives in its own module and registers itself on :data:`app`. Errors a user can
cause are :class:`hardcse.errors.HardcseError`; :func:`main` prints their one sentence and exits
non-zero, never showing a traceback for them.
"""

from __future__ import annotations

import sys

import typer

from hardcse.errors import HardcseError

app = typer.Typer(
    name="hardcse",
    help="Train sentence encoders without labels (SimCSE, ClusterNS, HSimCSE) and evaluate them on STS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    # Imported for their side effect of adding commands to `app`.
    from hardcse.cli import compare, convert, download, evaluate, mlm, train  # noqa: F401


def main() -> None:
    """Entry point of the ``hardcse`` script."""
    _register()
    try:
        app(standalone_mode=False)
    except HardcseError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("error: interrupted.", file=sys.stderr)
        sys.exit(130)
    except Exception as err:  # typer/click usage errors arrive here in non-standalone mode
        import click

        if isinstance(err, click.exceptions.Exit):
            sys.exit(err.exit_code)
        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(err.exit_code)
        if isinstance(err, click.exceptions.Abort):
            print("error: aborted.", file=sys.stderr)
            sys.exit(1)
        raise
