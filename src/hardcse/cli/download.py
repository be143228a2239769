"""``hardcse download``: fetch the STS/SICK evaluation data (and the training corpus)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from hardcse.cli import app


@app.command()
def download(
    data_dir: Path | None = typer.Option(
        None,
        "--data-dir",
        help="Where to put the data (default: $HARDCSE_DATA, else ~/.cache/hardcse/data).",
    ),
    corpus: bool = typer.Option(
        True, "--corpus/--no-corpus", help="Also fetch SimCSE's wiki1m_for_simcse.txt (about 120 MB)."
    ),
    force: bool = typer.Option(False, "--force", help="Download again what is already present."),
) -> None:
    """Download STS12-16, STS-B and SICK (official releases) and the training corpus."""
    from hardcse.data.download import Step, download_data
    from hardcse.data.paths import resolve_data_dir

    console = Console(highlight=False, soft_wrap=True)
    root = resolve_data_dir(data_dir)
    console.print(f"data directory: {root}", markup=False)

    def show(step: Step) -> None:
        console.print(f"  {step.name:<16} {step.status:<11} {step.detail}", markup=False)

    download_data(root, corpus=corpus, force=force, progress=sys.stderr.isatty(), on_step=show)
    console.print(f"done: the data is in {root}", markup=False)
