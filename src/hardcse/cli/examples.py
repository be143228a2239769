"""Examples shown at the end of each command's ``--help``, and the one-line summaries of
``hardcse --help``.

They are attached to the registered commands in one place (:func:`add_examples`), so a command's
module holds its options and this one what a user types. Each block starts with click's ``\\b``
marker, which keeps its lines as they are written instead of re-wrapping them.
"""

from __future__ import annotations

from typing import Any

#: The examples block of each command's help.
EXAMPLES: dict[str, str] = {
    "train": """\b
Examples:
  hardcse train                                # SimCSE, cpu preset
  hardcse train --recipe clusterns --tasks STS-B
  hardcse train --preset simcse-bert-base      # the paper's settings (GPU)
  hardcse train --recipe hsimcse --output runs/hs --set hsimcse.k=7
  hardcse train --report-to tensorboard        # tensorboard --logdir runs
  hardcse train --resume --output runs/hs      # continue a stopped run""",
    "evaluate": """\b
Examples:
  hardcse evaluate runs/simcse-cpu/model       # the seven STS tasks
  hardcse evaluate princeton-nlp/unsup-simcse-bert-base-uncased
  hardcse evaluate MODEL --tasks STS-B --split dev
  hardcse evaluate MODEL --output scores.json""",
    "compare": """\b
Examples:
  hardcse compare --recipes simcse,clusterns --seeds 3
  hardcse compare --recipes simcse,hsimcse --seeds 42,43 --set steps=100
  hardcse compare --recipes simcse,my-recipe.yaml --output runs/mine""",
    "convert": """\b
Examples:
  hardcse convert simcse-ckpt/pytorch_model.bin models/simcse-st
  hardcse convert CHECKPOINT OUTPUT --keep-mlp   # a supervised model
  hardcse convert CHECKPOINT OUTPUT --tokenizer bert-base-uncased""",
    "mlm": """\b
Examples:
  hardcse mlm --corpus my-domain.txt --steps 2000 --output runs/mlm
  hardcse train --model runs/mlm/model --corpus my-domain.txt
  hardcse mlm --output runs/mlm --resume       # continue a stopped run""",
    "download": """\b
Examples:
  hardcse download         # into $HARDCSE_DATA, else ~/.cache/hardcse/data
  hardcse download --data-dir data --no-corpus   # only the STS/SICK data""",
}

#: One line per command for the command list of ``hardcse --help`` (otherwise cut mid-sentence).
SUMMARIES: dict[str, str] = {
    "train": "Train an encoder, select it on STS-B dev or your pairs, score it.",
    "evaluate": "Score a model on the seven STS tasks or your own pairs.",
    "compare": "Train recipes over several seeds; report the differences.",
    "convert": "Make a SimCSE-family checkpoint a sentence-transformers model.",
    "mlm": "Continue masked-LM training on a corpus (domain adaptation).",
    "download": "Download the STS/SICK data and the training corpus.",
}


def _name(info: Any) -> str | None:
    callback = getattr(info, "callback", None)
    return info.name or (callback.__name__.replace("_", "-") if callback is not None else None)


def add_examples(app: Any) -> None:
    """Give each registered command of ``app`` (a ``typer.Typer``) its examples and summary,
    unless the command sets its own."""
    for info in app.registered_commands:
        name = _name(info)
        if name in EXAMPLES and not info.epilog:
            info.epilog = EXAMPLES[name]
        if name in SUMMARIES and not info.short_help:
            info.short_help = SUMMARIES[name]
