"""Named presets: the papers' settings for GPU users, and ``cpu`` for this kind of machine.

A preset is a partial :class:`~hardcse.training.config.TrainConfig`. ``cpu`` (the default) is the
bundled all-MiniLM-L6-v2 with CLS pooling, the corpus in the data directory, batch 64, lr 3e-5,
250 steps, STS-B dev every 50 steps and the two views in up to four length-sorted passes
(``length_chunks: 4``); combined with ``--recipe clusterns`` or ``--recipe
hsimcse`` it takes that method's CPU settings. The paper presets set the recipe themselves.
"""

from __future__ import annotations

from typing import Any

from hardcse.errors import ConfigError

WIKI1M = "corpus/wiki1m_for_simcse.txt"

CPU: dict[str, Any] = {
    "model": "default",
    "pooling": "cls",
    "max_seq_length": 32,
    "corpus": ["corpus/wikipedia_vital_articles_en.sentences.txt"],
    "batch_size": 64,
    "lr": 3e-5,
    "steps": 250,
    "eval_steps": 50,
    # Two views in up to 4 length-sorted passes: 17% less padded work, same embeddings (perf.py).
    "length_chunks": 4,
}


def _paper(model: str, batch: int, lr: float, **extra: Any) -> dict[str, Any]:
    # Official unsupervised recipe (METHODS.md §1-§2): 1 epoch of wiki1m, max length 32, fp16,
    # STS-B dev every 125 steps, CLS + train-only MLP.
    return {
        "model": model,
        "pooling": "cls",
        "max_seq_length": 32,
        "corpus": [WIKI1M],
        "batch_size": batch,
        "lr": lr,
        "steps": None,
        "epochs": 1.0,
        "eval_steps": 125,
        "fp16": True,
        **extra,
    }


SIMCSE_PRESETS: dict[str, dict[str, Any]] = {
    "simcse-bert-base": _paper("bert-base-uncased", 64, 3e-5, recipe="simcse"),
    "simcse-bert-large": _paper("bert-large-uncased", 64, 1e-5, recipe="simcse"),
    "simcse-roberta-base": _paper("roberta-base", 512, 1e-5, recipe="simcse"),
    "simcse-roberta-large": _paper("roberta-large", 512, 3e-5, recipe="simcse"),
}

# What the paper or the official README reports for each preset (seven-task average, "all").
PUBLISHED_AVG: dict[str, float | None] = {
    "simcse-bert-base": 76.25,
    "simcse-bert-large": 78.41,
    "simcse-roberta-base": 76.57,
    "simcse-roberta-large": 78.90,
    "clusterns-bert-base": 77.55,
    "clusterns-bert-large": 79.19,
    "clusterns-roberta-base": 77.98,
    "clusterns-roberta-large": 79.43,
    "hsimcse-roberta-base": None,
}


def _method_presets() -> dict[str, dict[str, Any]]:
    presets: dict[str, dict[str, Any]] = {}
    try:
        from hardcse.objectives.clusterns import CLUSTERNS_PRESETS

        for name, values in CLUSTERNS_PRESETS.items():
            presets[name] = {"recipe": "clusterns", "corpus": [WIKI1M], "steps": None, **values}
    except ImportError:  # pragma: no cover - during development only
        pass
    try:
        from hardcse.objectives.hsimcse import HSIMCSE_PRESETS

        for name, values in HSIMCSE_PRESETS.items():
            presets[name] = {"recipe": "hsimcse", "corpus": [WIKI1M], "steps": None, **values}
    except ImportError:  # pragma: no cover
        pass
    return presets


def _cpu_method(recipe: str) -> dict[str, Any]:
    if recipe == "clusterns":
        from hardcse.objectives.clusterns import CPU_CLUSTERNS

        return {"clusterns": dict(CPU_CLUSTERNS)}
    if recipe == "hsimcse":
        from hardcse.objectives.hsimcse import CPU_HSIMCSE

        return {"hsimcse": dict(CPU_HSIMCSE)}
    return {}


def preset_names() -> list[str]:
    return ["cpu", "clusterns", "hsimcse", *SIMCSE_PRESETS, *_method_presets()]


def resolve_preset(name: str, recipe: str | None) -> dict[str, Any]:
    """The config values of preset ``name`` for ``recipe`` (None: the preset's own, or simcse)."""
    if name in ("cpu", "clusterns", "hsimcse"):
        # `--preset clusterns` / `--preset hsimcse` are the cpu preset with that recipe.
        chosen = recipe or (name if name != "cpu" else "simcse")
        if name != "cpu" and recipe is not None and recipe != name:
            raise ConfigError(f"preset '{name}' is for recipe '{name}', not '{recipe}'.")
        return {**CPU, "recipe": chosen, "preset": name, **_cpu_method(chosen)}
    table = {**SIMCSE_PRESETS, **_method_presets()}
    if name not in table:
        raise ConfigError(f"unknown preset '{name}'; choose one of {', '.join(preset_names())}.")
    values = dict(table[name])
    if recipe is not None and recipe != values["recipe"]:
        raise ConfigError(f"preset '{name}' is for recipe '{values['recipe']}', not '{recipe}'.")
    return {**values, "preset": name}
