"""The Python API: ``hardcse.train``, ``hardcse.evaluate`` and ``hardcse.compare``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hardcse.training.config import TrainConfig, make_config

__all__ = ["compare", "evaluate", "make_config", "train"]


def train(
    config: TrainConfig | dict[str, Any] | str | Path | None = None,
    *,
    overwrite: bool = False,
    resume: bool = False,
    show_progress: bool = True,
    **overrides: Any,
) -> dict:
    """Train an encoder and return the ``results.json`` dict.

    ``config`` is a :class:`TrainConfig`, a dict of its fields (on top of the ``cpu`` preset),
    or a YAML file; keyword ``overrides`` are applied last. Example::

        import hardcse
        results = hardcse.train(recipe="simcse", steps=60, eval_steps=20, output="runs/demo")
    """
    from hardcse.training.run import train as run

    if isinstance(config, TrainConfig):
        cfg = config.updated(**overrides)
    elif isinstance(config, dict):
        cfg = make_config(**{**config, **overrides})
    else:
        cfg = make_config(config_file=config, **overrides)
    return run(cfg, overwrite=overwrite, resume=resume, show_progress=show_progress)


def evaluate(model: Any, **kwargs: Any) -> dict:
    """Score ``model`` (a SentenceTransformer, or a name/path) on the STS tasks; see
    :func:`hardcse.evaluation.sts.evaluate_model`."""
    from hardcse.evaluation.sts import evaluate_model

    if isinstance(model, (str, Path)):
        from hardcse.models.loading import load_sentence_model

        name = str(model)
        model = load_sentence_model(name, pooling=kwargs.pop("pooling", None))
        kwargs.setdefault("model_name", name)
    return evaluate_model(model, **kwargs)


def compare(
    recipes: str | list[str] = "simcse,clusterns,hsimcse",
    seeds: int | str | list[int] = 3,
    preset: str = "cpu",
    output: str | Path = "runs/compare",
    *,
    overwrite: bool = False,
    show_progress: bool = True,
    **overrides: Any,
) -> dict:
    """Train every recipe x seed into ``output`` (finished runs are skipped) and write
    ``report.md``, ``report.json`` and ``curves.png`` there; returns the report's contents.

    Keyword ``overrides`` are configuration keys for every run. Example::

        import hardcse
        report = hardcse.compare("simcse,clusterns", seeds=3, output="runs/cmp", steps=100)
        print(report["recipes"]["clusterns"]["vs_baseline"])

    See :func:`hardcse.comparison.run_comparison`.
    """
    from hardcse.comparison import run_comparison

    return run_comparison(
        recipes,
        seeds=seeds,
        preset=preset,
        output=output,
        overrides=overrides,
        overwrite=overwrite,
        show_progress=show_progress,
        log=print if show_progress else None,
    )
