"""``hardcse convert``: a SimCSE-family checkpoint -> a sentence-transformers model with the right pooling."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from hardcse.cli import app


@app.command()
def convert(
    checkpoint: Path = typer.Argument(
        ...,
        help="SimCSE/ClusterNS/HSimCSE checkpoint directory (config.json + pytorch_model.bin or model.safetensors, "
        "BertForCL/RobertaForCL or simcse_to_huggingface.py layout), or its weights file.",
    ),
    output: Path = typer.Argument(..., help="Directory to write the sentence-transformers model to."),
    pooling: str = typer.Option(
        "cls",
        "--pooling",
        help="cls (= cls_before_pooler, raw [CLS]: unsupervised SimCSE), mean (= avg), max, lasttoken or weightedmean.",
    ),
    keep_mlp: bool = typer.Option(
        False,
        "--keep-mlp",
        help="Keep the trained MLP head as Dense(tanh) after the pooling (SimCSE's --pooler cls, for supervised "
        "checkpoints). Default: drop it.",
    ),
    tokenizer: str | None = typer.Option(
        None, "--tokenizer", help="Tokenizer name or directory, if the checkpoint has no tokenizer files."
    ),
    max_seq_length: int | None = typer.Option(
        None, "--max-seq-length", min=1, help="Saved truncation length (default: the model's position limit)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUTPUT if it exists."),
) -> None:
    """Convert CHECKPOINT into a model that plain SentenceTransformer(OUTPUT) and MTEB load with the right pooling."""
    from hardcse.models.convert import convert_checkpoint

    report = convert_checkpoint(
        checkpoint,
        output,
        pooling=pooling,
        keep_mlp=keep_mlp,
        tokenizer=tokenizer,
        max_seq_length=max_seq_length,
        overwrite=overwrite,
    )
    console = Console(highlight=False, soft_wrap=True)
    console.print(report.summary(), markup=False)
    console.print(f"wrote {output}", markup=False)
