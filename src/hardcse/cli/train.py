"""``hardcse train``: train an encoder with a recipe and preset, then report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from hardcse.cli import app
from hardcse.errors import ConfigError
from hardcse.safety import brief_path, check_inputs_outside, input_paths, load_yaml_text


def _parse_sets(items: list[str]) -> dict[str, Any]:
    """``--set clusterns.k=32 --set dropout=0.1`` -> nested dict of YAML-typed values."""
    values: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or key.startswith(".") or key.endswith("."):
            raise ConfigError(f"--set expects KEY=VALUE (e.g. --set dropout=0.1), got '{item}'.")
        try:
            value = load_yaml_text(raw, f"--set {brief_path(key)}")
        except yaml.YAMLError:
            raise ConfigError(
                f"--set {brief_path(key)}: '{brief_path(raw)}' is not a valid value (YAML syntax)."
            ) from None
        if "." in key:
            group, sub = key.split(".", 1)
            nested = values.setdefault(group, {})
            if not isinstance(nested, dict):
                raise ConfigError(f"--set {key} conflicts with --set {group}={nested!r}.")
            nested[sub] = value
        else:
            values[key] = value
    return values


# Options that do not change what a resumed run computes.
_RESUME_OPTIONS = {"output", "resume", "quiet", "data_dir", "trust_remote_code", "report_to"}


def _given(ctx: typer.Context, name: str) -> bool:
    """True when option ``name`` was typed on the command line (or set in the environment)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


@app.command()
def train(
    ctx: typer.Context,
    recipe: Annotated[
        str | None,
        typer.Option(help="simcse, clusterns, hsimcse or several joined by '+' (clusterns+hsimcse); default: preset's"),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(help="cpu (default), clusterns, hsimcse, or a paper preset such as simcse-bert-base."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="YAML file of configuration keys (DIR/config.yaml of a run reproduces it)."),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Hugging Face name or path ('default': all-MiniLM-L6-v2).")] = None,
    corpus: Annotated[
        list[str] | None,
        typer.Option(help="Text file(s), one sentence per line, or a `datasets` name/path (repeatable)."),
    ] = None,
    corpus_column: Annotated[str | None, typer.Option(help="Text column of a `datasets` corpus.")] = None,
    max_sentences: Annotated[int | None, typer.Option(help="Use only the first N sentences.")] = None,
    steps: Annotated[int | None, typer.Option(help="Optimisation steps (overrides --epochs).")] = None,
    epochs: Annotated[float | None, typer.Option(help="Epochs, when --steps is not given.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Sentences per batch and device.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (linear decay, no warm-up).")] = None,
    eval_steps: Annotated[
        int | None, typer.Option(help="Evaluate the dev set (STS-B dev or --dev) and checkpoint every N steps.")
    ] = None,
    early_stopping: Annotated[int | None, typer.Option(help="Stop after N evaluations without improvement.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    output: Annotated[str | None, typer.Option(help="Run directory (default runs/RECIPE-PRESET).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run in --output.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue the run in --output from its last checkpoint.")] = False,
    data_dir: Annotated[
        str | None, typer.Option(help="Data directory (default $HARDCSE_DATA, else ~/.cache/hardcse/data).")
    ] = None,
    fp16: Annotated[bool | None, typer.Option("--fp16/--no-fp16", help="Mixed precision (GPU).")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Any configuration key, e.g. --set clusterns.k=32 --set dropout=0.1."),
    ] = None,
    plugin: Annotated[
        list[str] | None,
        typer.Option(
            "--plugin",
            help="Import this module first; it registers methods from outside hardcse (repeatable; saved in "
            "config.yaml, so --resume and compare import it too).",
        ),
    ] = None,
    tasks: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated STS tasks scored before and after training (default: all seven; a quick run: "
            "--tasks STS-B; none: only the --test pairs). Same as --set test_tasks=[...]."
        ),
    ] = None,
    dev: Annotated[
        str | None,
        typer.Option(
            help="Your own pairs for checkpoint selection and early stopping, instead of STS-B dev: a TSV, CSV or "
            "JSONL file (sentence1, sentence2, score), a saved `datasets` directory, or a domain such as "
            "STS-B:captions (its dev split)."
        ),
    ] = None,
    test: Annotated[
        list[str] | None,
        typer.Option(
            help="Pairs scored before and after training, next to the STS tasks (repeatable; --tasks none: "
            "instead of them): a file as for --dev, or a domain such as STS-B:captions (its test split)."
        ),
    ] = None,
    pair_columns: Annotated[
        str | None,
        typer.Option(help="Columns of --dev/--test files: sentence 1, sentence 2, score (e.g. s1,s2,label)."),
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
    trust_remote_code: Annotated[
        bool,
        typer.Option(
            "--trust-remote-code",
            help="Allow the model's own code from the hub to run (only this flag enables it, never a config file).",
        ),
    ] = False,
    report_to: Annotated[
        list[str] | None,
        typer.Option(
            help="Watch the run live: tensorboard (event files in DIR/tensorboard), wandb, mlflow, trackio or none "
            "(default); repeatable or comma-separated. Logs the loss components, STS-B dev and the method "
            "diagnostics."
        ),
    ] = None,
) -> None:
    """Train an encoder, select it on STS-B dev (or your --dev pairs), export it and score it on the STS tasks
    (and your --test pairs)."""
    from hardcse.cli import quiet_library_logs
    from hardcse.evaluation.tables import format_comparison
    from hardcse.training.config import make_config
    from hardcse.training.run import train as run

    quiet_library_logs()

    if resume:
        if output is None:
            raise ConfigError("--resume needs --output DIR, the run to continue.")
        # A resumed run is the run in DIR/config.yaml: options that would change it are refused.
        changing = [
            f"--{name.rstrip('_').replace('_', '-')}"
            for name in ctx.params
            if name not in _RESUME_OPTIONS and _given(ctx, name)
        ]
        if changing:
            raise ConfigError(
                f"--resume continues the run in '{output}' exactly as its config.yaml says, so "
                f"{', '.join(changing)} cannot be used with it; drop {'it' if len(changing) == 1 else 'them'}, "
                "or start a new run with another --output."
            )
        saved = Path(output) / "config.yaml"
        if not saved.is_file():
            raise ConfigError(f"nothing to resume in '{output}': it has no config.yaml.")
        cfg = make_config(config_file=saved, output=output, data_dir=data_dir, report_to=report_to)
    else:
        overrides = {
            "model": model,
            "corpus": corpus,
            "corpus_column": corpus_column,
            "max_sentences": max_sentences,
            "steps": steps,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "eval_steps": eval_steps,
            "early_stopping": early_stopping,
            "seed": seed,
            "output": output,
            "data_dir": data_dir,
            "fp16": fp16,
            "plugins": plugin,
            "report_to": report_to,
            "dev": dev,
            "test": test,
            "pair_columns": None if pair_columns is None else [c.strip() for c in pair_columns.split(",")],
        }
        if epochs is not None and steps is None:
            overrides["steps"] = None
            cfg_steps_none = True
        else:
            cfg_steps_none = False
        if tasks is not None:
            names = [t.strip() for t in tasks.split(",") if t.strip()]
            overrides["test_tasks"] = [] if [n.lower() for n in names] == ["none"] else names
        overrides.update(_parse_sets(set_ or []))
        cfg = make_config(preset=preset, recipe=recipe, config_file=config, **overrides)
        if cfg_steps_none:
            cfg.steps = None
    # Running a model repository's own Python code is the user's decision on this command line:
    # a config file (a shared config.yaml, a run directory being resumed) cannot switch it on.
    if cfg.trust_remote_code and not trust_remote_code:
        raise ConfigError(
            "the configuration asks for trust_remote_code; pass --trust-remote-code if you trust the model's code."
        )
    cfg.trust_remote_code = trust_remote_code
    if overwrite and config is not None and Path(cfg.output).expanduser().is_dir():
        # --overwrite never deletes the --config file the new run was made from.
        check_inputs_outside(Path(cfg.output), input_paths([config]), "--output", "run")
    results = run(cfg, overwrite=overwrite, resume=resume, show_progress=not quiet)
    typer.echo("")
    if results["test"]["tasks"]:
        typer.echo(format_comparison(results["start"], results["test"], labels=("untrained", "trained")))
    if results["test"].get("pairs"):
        from hardcse.evaluation.pairs import format_pair_comparison

        typer.echo(format_pair_comparison(results["start"].get("pairs", {}), results["test"]["pairs"]))
    typer.echo(
        f"\nbest {results.get('dev_set', 'STS-B dev')} {results['stsb_dev_best']:.2f} at step {results['best_step']} "
        f"(untrained {results['start']['stsb_dev']:.2f}); outputs in {cfg.output}"
    )
