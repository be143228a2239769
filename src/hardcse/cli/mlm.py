"""``hardcse mlm``: continued masked-language-model training (domain-adaptive pre-training)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hardcse.cli import app
from hardcse.errors import ConfigError


@app.command()
def mlm(
    model: Annotated[
        str,
        typer.Option(
            help="Hugging Face name or path, or a sentence-transformers directory ('default': all-MiniLM-L6-v2)."
        ),
    ] = "default",
    corpus: Annotated[
        list[str] | None,
        typer.Option(help="Text file(s), one sentence per line, or a `datasets` name/path (repeatable)."),
    ] = None,
    corpus_column: Annotated[str, typer.Option(help="Text column of a `datasets` corpus.")] = "text",
    max_sentences: Annotated[int | None, typer.Option(help="Use only the first N sentences.")] = None,
    output: Annotated[str, typer.Option(help="Run directory; the trained model goes to DIR/model.")] = "runs/mlm",
    steps: Annotated[int, typer.Option(help="Optimisation steps.")] = 1000,
    batch_size: Annotated[int, typer.Option(help="Sentences per batch.")] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate (after the warm-up).")] = 5e-5,
    lr_schedule: Annotated[
        str, typer.Option(help="After the warm-up: 'linear' decay to 0 at --steps, or 'constant'.")
    ] = "linear",
    warmup_steps: Annotated[
        int | None, typer.Option(help="Linear warm-up steps (default 6% of --steps).", show_default=False)
    ] = None,
    max_seq_length: Annotated[int, typer.Option(help="Cut sentences to this many tokens.")] = 128,
    mlm_probability: Annotated[float, typer.Option(help="Share of the tokens masked.")] = 0.15,
    reinit_top_layers: Annotated[
        int, typer.Option(help="Re-initialise the top K transformer layers first (seeded); MLM trains them back.")
    ] = 0,
    save_steps: Annotated[int, typer.Option(help="Checkpoint every N steps (for --resume).")] = 200,
    seed: Annotated[int, typer.Option(help="Random seed (head, re-initialised layers, data order, masking).")] = 42,
    data_dir: Annotated[
        str | None, typer.Option(help="Data directory (default $HARDCSE_DATA, else ~/.cache/hardcse/data).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run in --output.")] = False,
    resume: Annotated[
        bool, typer.Option(help="Continue the run in --output from its last checkpoint (with its own settings).")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    trust_remote_code: Annotated[
        bool, typer.Option("--trust-remote-code", help="Allow the model's own code from the hub to run.")
    ] = False,
    report_to: Annotated[
        list[str] | None,
        typer.Option(
            help="Watch the run live: tensorboard (event files in DIR/tensorboard), wandb, mlflow, trackio or none "
            "(default); repeatable or comma-separated."
        ),
    ] = None,
) -> None:
    """Continue masked-LM training of an encoder on a corpus (domain-adaptive pre-training).

    The result, DIR/model, is a plain Hugging Face model directory: train on it with
    `hardcse train --model DIR/model`.
    """
    from hardcse.training.mlm import CONFIG_FILE, MLMConfig, train_mlm

    if resume:
        saved = Path(output) / CONFIG_FILE
        if not saved.is_file():
            raise ConfigError(f"nothing to resume in '{output}': it has no {CONFIG_FILE}.")
        cfg = MLMConfig.from_yaml(saved)
        cfg.output = output
        if cfg.trust_remote_code and not trust_remote_code:
            raise ConfigError(
                "the saved configuration asks for trust_remote_code; "
                "pass --trust-remote-code if you trust the model's code."
            )
    else:
        cfg = MLMConfig(
            model=model,
            corpus=list(corpus) if corpus else MLMConfig().corpus,
            corpus_column=corpus_column,
            max_sentences=max_sentences,
            data_dir=data_dir,
            output=output,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            lr_schedule=lr_schedule,
            warmup_steps=warmup_steps,
            max_seq_length=max_seq_length,
            mlm_probability=mlm_probability,
            reinit_top_layers=reinit_top_layers,
            save_steps=save_steps,
            seed=seed,
        )
    if report_to:  # where the run is watched, also for a resumed run
        cfg.report_to = list(report_to)
    cfg.trust_remote_code = trust_remote_code
    result = train_mlm(
        cfg, overwrite=overwrite, resume=resume, show_progress=not quiet, echo=lambda line: typer.echo(line, err=True)
    )
    first, last = result["loss_first"], result["loss_last"]
    losses = f"MLM loss {first:.4f} -> {last:.4f}" if first is not None and last is not None else "MLM loss undefined"
    typer.echo(
        f"{losses} (mean of the first/last {result['loss_window']} steps) over {result['steps']} steps; "
        f"model in {result['output_model']} (train on it: hardcse train --model {result['output_model']})"
    )
