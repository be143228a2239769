"""``hardcse compare``: several recipes x seeds, then one report with significance tests."""

from __future__ import annotations

from typing import Annotated

import typer

from hardcse.cli import app


@app.command()
def compare(
    recipes: Annotated[
        str,
        typer.Option(help="Comma-separated recipes and/or YAML config files; the first is the baseline."),
    ] = "simcse,clusterns,hsimcse",
    seeds: Annotated[
        str, typer.Option(help="A count N (seeds 42..42+N-1) or a list such as 42,43,44 (one seed: 42,).")
    ] = "3",
    preset: Annotated[str, typer.Option(help="The preset every run starts from.")] = "cpu",
    output: Annotated[
        str, typer.Option(help="Comparison directory: runs in DIR/<recipe>-s<seed>/, report in DIR.")
    ] = "runs/compare",
    data_dir: Annotated[
        str | None, typer.Option(help="Data directory (default $HARDCSE_DATA, else ~/.cache/hardcse/data).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="A configuration key for every run, e.g. --set steps=100 (repeatable)."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Redo runs in DIR whose configuration differs instead of refusing.")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bars (the one line per run stays).")] = False,
) -> None:
    """Train every recipe with every seed (skipping runs already finished in --output), then write
    report.md, report.json and curves.png there."""
    from pathlib import Path

    from tqdm.auto import tqdm

    from hardcse.cli import quiet_library_logs
    from hardcse.cli.train import _parse_sets
    from hardcse.comparison import run_comparison
    from hardcse.comparison.report import format_report
    from hardcse.errors import Interrupted

    quiet_library_logs()
    overrides = _parse_sets(set_ or [])
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    try:
        summary = run_comparison(
            recipes,
            seeds=seeds,
            preset=preset,
            output=output,
            overrides=overrides,
            overwrite=overwrite,
            show_progress=not quiet,
            log=lambda line: tqdm.write(line),
        )
    except (Interrupted, KeyboardInterrupt) as err:
        # Ctrl-C exits 130; SIGTERM/SIGHUP 128 + the signal (the run in progress saved a checkpoint).
        stopped = Interrupted(
            f"interrupted; finished runs in '{output}' are kept, and the same hardcse compare command continues "
            "the comparison (an interrupted run resumes from its last checkpoint)."
        )
        stopped.exit_code = getattr(err, "exit_code", Interrupted.exit_code)
        raise stopped from None
    typer.echo("")
    typer.echo(format_report(summary).split("## Runs")[0].rstrip())
    typer.echo(f"\nreport: {Path(output) / 'report.md'} (+ report.json, curves.png)")
