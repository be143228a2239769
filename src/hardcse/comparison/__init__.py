"""Comparing recipes over seeds: run every recipe x seed (resumably), then report.

``run_comparison`` is what ``hardcse compare`` and ``hardcse.compare(...)`` call. The parts:

* :mod:`~hardcse.comparison.runner` - the plan of runs, skipping/continuing runs in DIR;
* :mod:`~hardcse.comparison.stats` - mean ± std, paired t-test over seeds, paired bootstrap over
  test pairs (pure functions);
* :mod:`~hardcse.comparison.report` - ``report.json``, ``report.md`` and ``curves.png``.

(The package is not called ``compare`` so that it cannot shadow the ``hardcse.compare`` function.)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hardcse.comparison.runner import (
    Log,
    parse_recipes,
    parse_seeds,
    plan_runs,
    run_all,
    run_info,
    seed_text,
    start_cosines,
)


def run_comparison(
    recipes: str | Sequence[str],
    seeds: int | str | Sequence[int] = 3,
    preset: str = "cpu",
    output: str | Path = "runs/compare",
    overrides: dict[str, Any] | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
    callbacks: Sequence[Any] | None = None,
    log: Log | None = None,
) -> dict[str, Any]:
    """Run every recipe x seed into ``output`` (finished runs are skipped) and write the report.

    Args:
        recipes: recipe names (``simcse``, ``clusterns``, ``hsimcse``) and/or YAML config files,
            as a list or a comma-separated string; the first is the baseline of the differences.
        seeds: a count N (seeds 42 .. 42+N-1) or an explicit list / ``"42,43,44"``.
        preset: the preset every run starts from (``cpu`` by default).
        output: the comparison directory; runs go to ``output/<label>-s<seed>/``.
        overrides: configuration keys applied to every run (as ``--set``), e.g. ``{"steps": 100}``.
        overwrite: redo runs whose saved configuration differs instead of refusing.
        show_progress: training/encoding progress bars.
        callbacks: extra ``transformers.TrainerCallback`` objects for every run that is trained.
        log: called with one line per run (skipped, continued, trained, done).

    Returns:
        The report's contents (``output/report.json``).
    """
    from hardcse.comparison.report import summarize, write_report
    from hardcse.comparison.runner import ensure_predictions
    from hardcse.training.run import PREDICTIONS

    say = log or (lambda _msg: None)
    items = parse_recipes(recipes)
    seed_list = parse_seeds(seeds)
    plan = plan_runs(items, seed_list, preset, output, overrides)
    say(f"{len(plan)} runs: {len(items)} recipe(s) x {len(seed_list)} seed(s) ({seed_text(seed_list)})")
    results = run_all(plan, output, overwrite=overwrite, show_progress=show_progress, callbacks=callbacks, log=log)
    predictions = {}
    for spec in plan:
        if not (spec.path / PREDICTIONS).is_file():
            say(f"{spec.name}: computing per-pair test predictions from its model (made before they were saved)")
        predictions[spec.name] = ensure_predictions(spec, show_progress=show_progress)
    say("paired bootstrap and report")
    summary = summarize(
        plan,
        results,
        predictions,
        {spec.name: run_info(spec) for spec in plan},
        start_cosines=start_cosines(plan[0]),
    )
    write_report(output, summary)
    return summary


__all__ = ["parse_recipes", "parse_seeds", "plan_runs", "run_all", "run_comparison"]
