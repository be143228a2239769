"""Named presets: the papers' settings for GPU users, and ``cpu`` for this kind of machine.

A preset is a partial :class:`~hardcse.training.config.TrainConfig`. ``cpu`` (the default) is the
bundled all-MiniLM-L6-v2 with CLS pooling, the corpus in the data directory, batch 64, lr 3e-5,
250 steps, STS-B dev every 50 steps and the two views in up to four length-sorted passes
(``length_chunks: 4``); combined with ``--recipe clusterns``, ``--recipe hsimcse`` or a
composition (``--recipe clusterns+hsimcse``) it takes each method's CPU settings. The paper
presets are the methods' own (:attr:`hardcse.objectives.registry.Method.presets`) and set the
recipe themselves.
"""

from __future__ import annotations

from typing import Any

from hardcse.errors import ConfigError
from hardcse.objectives.registry import WIKI1M, all_presets, cpu_settings, get_method, method_names, recipe_names

__all__ = ["CPU", "WIKI1M", "preset_names", "published_averages", "resolve_preset"]

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

#: Presets that run any recipe with each method's CPU settings.
_CPU_LIKE: dict[str, dict[str, Any]] = {"cpu": CPU}


def published_averages() -> dict[str, float | None]:
    """What the paper or the official README reports for each paper preset (seven-task average,
    "all"; ``None``: no comparable figure), from the registered methods."""
    table: dict[str, float | None] = {}
    for name in method_names():
        table.update(get_method(name).published)
    return table


def preset_names() -> list[str]:
    """``cpu``, one alias per method (``--preset clusterns``: the cpu preset with that recipe;
    not ``simcse``, which is the cpu preset's own recipe) and every method's paper presets."""
    return ["cpu", *(n for n in method_names() if n != "simcse"), *all_presets()]


def resolve_preset(name: str, recipe: str | None) -> dict[str, Any]:
    """The config values of preset ``name`` for ``recipe`` (None: the preset's own, or simcse).

    The ``cpu`` preset takes each recipe method's CPU settings (all of them for a
    composed recipe).
    """
    aliases = [n for n in method_names() if n != "simcse"]
    if name in _CPU_LIKE:
        chosen = recipe or "simcse"
        return {**_CPU_LIKE[name], "recipe": chosen, "preset": name, **cpu_settings(chosen)}
    if name in aliases:
        # `--preset clusterns` / `--preset hsimcse` are the cpu preset with that recipe.
        chosen = recipe or name
        if recipe is not None and recipe_names(recipe) != [name]:
            raise ConfigError(f"preset '{name}' is for recipe '{name}', not '{recipe}'.")
        return {**CPU, "recipe": chosen, "preset": name, **cpu_settings(chosen)}
    table = all_presets()
    if name not in table:
        raise ConfigError(f"unknown preset '{name}'; choose one of {', '.join(preset_names())}.")
    values = dict(table[name])
    if recipe is not None and recipe_names(recipe) != recipe_names(values["recipe"]):
        raise ConfigError(f"preset '{name}' is for recipe '{values['recipe']}', not '{recipe}'.")
    return {**values, "preset": name}
