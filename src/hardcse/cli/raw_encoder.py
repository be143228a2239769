"""``hardcse raw-encoder``: build the papers-like starting encoder (``--model raw``) once."""

from __future__ import annotations

from typing import Annotated

import typer

from hardcse.cli import app


@app.command("raw-encoder")
def raw_encoder(
    data_dir: Annotated[
        str | None, typer.Option(help="Data directory (default $HARDCSE_DATA, else ~/.cache/hardcse/data).")
    ] = None,
    rebuild: Annotated[bool, typer.Option(help="Build it again from scratch even if it is cached.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Build the 'raw' starting encoder (a raw-MLM-like encoder for the papers' regime) into the cache.

    all-MiniLM-L6-v2 with its top 4 layers re-initialised and trained back by 300 masked-LM steps
    on the shared Wikipedia sentences (seeded). Afterwards `--model raw` and `--preset raw` use it.
    An interrupted build continues where it stopped.
    """
    from hardcse.training.raw_encoder import build_raw_encoder

    path, built = build_raw_encoder(
        data_dir=data_dir, rebuild=rebuild, show_progress=not quiet, echo=lambda line: typer.echo(line, err=True)
    )
    state = "built" if built else "already built"
    typer.echo(f"raw encoder {state}: {path} (train on it: hardcse train --preset raw)")
