"""Build the ``raw`` starting encoder: a raw-masked-LM-like encoder made from the bundled model.

The papers train from raw masked-language models (BERT, RoBERTa): their sentence vectors are
anisotropic (all cosines high) and score about 40-57 on the seven STS tasks untrained, and SimCSE
lifts them by 20-35 points. Where no raw masked-LM can be downloaded, the closest encoder that can
be built from all-MiniLM-L6-v2 (an already trained sentence encoder: 73.69 with [CLS], anisotropy
0.61) is this one: its top 4 transformer layers (of 6) re-initialised and trained back by 300
masked-LM steps (``hardcse mlm``: batch 32, max length 32, lr 5e-5, seed 42) on the Wikipedia
sentences of the data directory. The lower layers keep their lexical knowledge; the upper ones are
a masked-LM's.

**Negative result, measured** (BENCHMARKS.md, "Starting encoders for a papers-like regime"): it has
a raw masked-LM's untrained profile (seven-task [CLS] average 52.99, anisotropy 0.97) but not its
behaviour under contrastive training. SimCSE *lowers* its STS-B dev score (61.73 -> 57.27 in 250
steps) instead of lifting it by 20+ points as it lifts BERT, and ClusterNS lowers every task
(3 seeds x 250 steps: SimCSE 50.70, ClusterNS 49.09 against 52.99 untrained). Four other
constructions (fewer re-initialised layers, a longer masked-LM continuation, noise in every layer,
"rogue" output dimensions; ``regime_constructions.py``) do no better. The papers' regime needs a
genuinely pre-trained masked-LM (``--model bert-base-uncased`` where the hub is reachable); this
encoder only shows what the methods' mechanisms do when the cosines start high. That is why it is
a benchmark, not a ``hardcse`` command.

The build is seeded (same machine, same thread count: same weights), takes about 15 minutes on 2
CPU cores, and continues where it stopped when interrupted (the masked-LM run's own resume). Train
on the result like on any model::

    python benchmarks/raw_encoder.py runs/raw-encoder
    hardcse train --model runs/raw-encoder/model --steps 500 --eval-steps 125
    hardcse compare --recipes simcse,clusterns --seeds 3 --set model=runs/raw-encoder/model \\
        --set steps=250 --set eval_steps=50 --output runs/compare-raw

(The last two are what ``--preset raw`` of earlier versions ran: the ``cpu`` preset on this
encoder, 500 steps with STS-B dev every 125.)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from hardcse.errors import HardcseError
from hardcse.models.defaults import DEFAULT_MODEL
from hardcse.training.mlm import CONFIG_FILE, DEFAULT_CORPUS, MODEL_DIR, RESULT_FILE, MLMConfig, train_mlm

#: Names the build recipe; results quote it so a changed recipe is never taken for this one.
BUILD_NAME = "minilm-l6-reinit4-mlm300-s42"


def raw_encoder_config(output: str | Path, data_dir: str | None = None) -> MLMConfig:
    """The measured build recipe of the ``raw`` encoder, writing its run into ``output``."""
    return MLMConfig(
        model=DEFAULT_MODEL,
        corpus=[DEFAULT_CORPUS],
        data_dir=data_dir,
        output=str(output),
        steps=300,
        batch_size=32,
        lr=5e-5,
        max_seq_length=32,
        mlm_probability=0.15,
        reinit_top_layers=4,
        save_steps=100,
        seed=42,
    )


def build_raw_encoder(
    output: str | Path,
    data_dir: str | None = None,
    rebuild: bool = False,
    show_progress: bool = True,
    echo: Callable[[str], None] | None = None,
    config: Callable[[str | Path, str | None], MLMConfig] = raw_encoder_config,
) -> tuple[Path, bool]:
    """Build the encoder into ``output`` unless it is there; returns ``(model path, built now)``.

    An interrupted build continues from its last checkpoint, so it ends with the weights of an
    uninterrupted one; ``rebuild`` trains it again from scratch. ``config`` makes the recipe (a
    smaller one in tests).
    """
    out = Path(output).expanduser()
    model = out / MODEL_DIR
    if not rebuild and (out / RESULT_FILE).is_file() and (model / "config.json").is_file():
        return model, False
    out.parent.mkdir(parents=True, exist_ok=True)
    resume = not rebuild and (out / CONFIG_FILE).is_file()
    train_mlm(
        config(out, data_dir),
        overwrite=rebuild and out.exists(),
        resume=resume,
        show_progress=show_progress,
        echo=echo,
    )
    return model, True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", help="run directory of the build; the encoder goes to OUTPUT/model")
    parser.add_argument("--data-dir", help="data directory (default $HARDCSE_DATA, else ~/.cache/hardcse/data)")
    parser.add_argument("--rebuild", action="store_true", help="build it again from scratch")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        model, built = build_raw_encoder(
            args.output,
            data_dir=args.data_dir,
            rebuild=args.rebuild,
            show_progress=not args.quiet,
            echo=lambda line: print(line, file=sys.stderr),
        )
    except HardcseError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(f"raw encoder {'built' if built else 'already built'} ({BUILD_NAME}): {model}")
    print(f"train on it: hardcse train --model {model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
