"""The ``raw`` starting encoder: a papers-like regime built from the bundled model.

The papers train from raw masked-language models (BERT, RoBERTa): their sentence vectors are
anisotropic (all cosines high) and score ~40-57 on the seven STS tasks untrained, and SimCSE lifts
them by 20-35 points. The only encoder on a machine without the hub is all-MiniLM-L6-v2, an
already-trained sentence encoder (73.69 with [CLS], anisotropy 0.61), where the methods have
little to do. The closest raw-MLM-like encoder that can be built from it: re-initialise its top
four transformer layers (of six) and train them back with 300 steps of masked-LM
(:mod:`hardcse.training.mlm`) on the shared Wikipedia sentences. The lower layers keep their
lexical knowledge; the upper ones are a masked-LM's. BENCHMARKS.md ("Starting encoders for a
papers-like regime") has the measurements that chose it among the candidates.

The build is seeded (the re-initialised layers, the fresh head, data order, masking and dropout
all follow ``seed``); it is cached in :func:`hardcse.models.defaults.raw_encoder_dir` and never
committed. ``--model raw`` and ``--preset raw`` use it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hardcse.models.defaults import DEFAULT_MODEL, RAW_ENCODER_BUILD, raw_encoder_dir
from hardcse.training.mlm import CONFIG_FILE, DEFAULT_CORPUS, MODEL_DIR, RESULT_FILE, MLMConfig, train_mlm

__all__ = ["RAW_ENCODER_BUILD", "build_raw_encoder", "raw_encoder_config"]


def raw_encoder_config(data_dir: str | None = None) -> MLMConfig:
    """The build recipe of the ``raw`` encoder (changing it requires a new ``RAW_ENCODER_BUILD``)."""
    return MLMConfig(
        model=DEFAULT_MODEL,
        corpus=[DEFAULT_CORPUS],
        data_dir=data_dir,
        output=str(raw_encoder_dir()),
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
    data_dir: str | None = None,
    rebuild: bool = False,
    show_progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> tuple[Path, bool]:
    """Build the ``raw`` encoder into the cache unless it is there; returns ``(model path, built now)``.

    An interrupted build continues from its last checkpoint (the masked-LM run's own resume), so
    it ends with the weights of an uninterrupted one. ``rebuild`` trains it again from scratch.
    """
    out = raw_encoder_dir()
    model = out / MODEL_DIR
    if not rebuild and (out / RESULT_FILE).is_file() and (model / "config.json").is_file():
        return model, False
    out.parent.mkdir(parents=True, exist_ok=True)
    config = raw_encoder_config(data_dir)
    resume = not rebuild and (out / CONFIG_FILE).is_file()
    train_mlm(config, overwrite=rebuild and out.exists(), resume=resume, show_progress=show_progress, echo=echo)
    return model, True
