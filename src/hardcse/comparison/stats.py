"""Statistics for comparing recipes over seeds: mean ± std, a paired t-test, a paired bootstrap.

All functions are pure (numbers in, numbers out) so they can be checked on hand-worked inputs.

* :func:`mean_std` - mean and sample standard deviation (``ddof=1``) over seeds.
* :func:`paired_ttest` - two-sided paired t-test over seeds (``scipy.stats.ttest_rel``) of one
  number per seed, e.g. the seven-task average of a recipe and of the baseline with the same seed.
* :func:`bootstrap_averages` / :func:`bootstrap_summary` - a paired bootstrap over **test pairs**:
  every resample draws, per task, as many pairs as the task has, with replacement; the same draws
  are used for every run, so the comparison is paired. Each run's task Spearman x100 is recomputed
  on the drawn pairs and averaged over tasks (unrounded; the tasks' subsets are concatenated, i.e.
  the ``all`` aggregation the reports use).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from hardcse.evaluation.scoring import centered_ranks, spearman_of_ranks
from hardcse.numeric import nan_to_none

#: Resamples and seed of the paired bootstrap (fixed, so a report is reproducible).
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (``ddof=1``); the std is ``None`` for a single value."""
    if not values:
        raise ValueError("mean_std needs at least one value")
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else None
    return float(array.mean()), std


def paired_ttest(candidate: Sequence[float], baseline: Sequence[float]) -> float | None:
    """Two-sided p-value of a paired t-test of ``candidate - baseline`` (one pair per seed).

    ``None`` when it is undefined: fewer than two seeds, or all differences equal (zero variance).
    """
    if len(candidate) != len(baseline):
        raise ValueError("paired_ttest needs one candidate and one baseline value per seed")
    if len(candidate) < 2:
        return None
    diffs = np.asarray(candidate, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    if np.all(diffs == diffs[0]):
        return None
    from scipy.stats import ttest_rel

    p = float(ttest_rel(candidate, baseline).pvalue)
    return nan_to_none(p)


def resample_indices(sizes: Mapping[str, int], resamples: int, seed: int) -> dict[str, np.ndarray]:
    """Per task, ``resamples`` x ``size`` pair indices drawn with replacement; row 0 is the identity.

    Row 0 being the original sample makes the bootstrap's first value the observed difference.
    """
    rng = np.random.default_rng(seed)
    drawn = {}
    for task, size in sizes.items():
        idx = rng.integers(0, size, size=(resamples, size))
        idx[0] = np.arange(size)
        drawn[task] = idx
    return drawn


def bootstrap_averages(
    gold: Mapping[str, np.ndarray],
    runs: Sequence[Mapping[str, np.ndarray]],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> np.ndarray:
    """The task-average Spearman x100 of every run on every resample: shape ``(len(runs), resamples)``.

    ``gold`` maps each task to its gold scores; each run maps the same tasks to its predicted
    similarity for the same pairs, in the same order. The draws depend only on ``seed`` and the
    task sizes, so two calls with the same tasks are paired with each other. Resample 0 is the
    original test set (see :func:`resample_indices`).
    """
    tasks = list(gold)
    for run in runs:
        if list(run) != tasks or any(len(run[t]) != len(gold[t]) for t in tasks):
            raise ValueError("every run needs predictions for the same tasks and pairs as the gold scores")
    indices = resample_indices({t: len(gold[t]) for t in tasks}, resamples, seed)
    totals = np.zeros((len(runs), resamples), dtype=np.float64)
    for task in tasks:
        idx = indices[task]
        gold_ranks = centered_ranks(np.asarray(gold[task], dtype=np.float64)[idx])  # once per task, not per run
        for r, run in enumerate(runs):
            totals[r] += spearman_of_ranks(gold_ranks, centered_ranks(np.asarray(run[task], dtype=np.float64)[idx]))
    return totals / len(tasks)


def bootstrap_summary(differences: np.ndarray, level: float = 0.95) -> dict[str, float | int | None]:
    """Summarise bootstrap differences (candidate - baseline, resample 0 the observed one).

    Returns ``{"delta", "low", "high", "p_le_0", "resamples"}``: the observed difference, the
    percentile interval at ``level`` and the fraction of resamples with a difference <= 0 (a
    one-sided bootstrap p-value for "the candidate is better"). Resamples where a Spearman is
    undefined (NaN, only possible on tiny test sets) are left out and not counted.
    """
    diffs = np.asarray(differences, dtype=np.float64)
    observed = nan_to_none(float(diffs[0])) if len(diffs) else None
    valid = diffs[~np.isnan(diffs)]
    if not len(valid):
        return {"delta": observed, "low": None, "high": None, "p_le_0": None, "resamples": 0}
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(valid, [tail, 100.0 - tail])
    return {
        "delta": observed,
        "low": float(low),
        "high": float(high),
        "p_le_0": float(np.mean(valid <= 0)),
        "resamples": int(len(valid)),
    }


def paired_bootstrap(
    gold: Mapping[str, np.ndarray],
    candidate: Sequence[Mapping[str, np.ndarray]],
    baseline: Sequence[Mapping[str, np.ndarray]],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> dict[str, float | int | None]:
    """Paired bootstrap over test pairs of ``candidate`` against ``baseline`` (one run per seed each).

    Per resample the task-average Spearman difference is taken seed by seed (candidate seed s minus
    baseline seed s) and averaged over seeds; see :func:`bootstrap_summary` for the result.
    """
    if len(candidate) != len(baseline) or not candidate:
        raise ValueError("paired_bootstrap needs one candidate and one baseline run per seed")
    averages = bootstrap_averages(gold, [*candidate, *baseline], resamples, seed)
    n = len(candidate)
    return bootstrap_summary((averages[:n] - averages[n:]).mean(axis=0), level)
