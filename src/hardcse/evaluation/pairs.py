"""Scoring a model on pair sets (a user's own pairs or a built-in domain's), as the STS tasks are
scored: the cosine of the two sentence embeddings, Spearman x100 against the gold scores, plus a
bootstrap 95% interval over the pairs (percentile method, :data:`INTERVAL_RESAMPLES` resamples,
fixed seed, so a report is reproducible)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from sentence_transformers import SentenceTransformer

from hardcse.data.pairs import PairSet
from hardcse.evaluation.encoding import DEFAULT_BATCH_SIZE
from hardcse.evaluation.scoring import rowwise_spearman
from hardcse.evaluation.sts import score_tasks

#: Resamples and seed of the per-set bootstrap interval.
INTERVAL_RESAMPLES = 1000
INTERVAL_SEED = 0
#: Task key of a pair set in ``test_predictions.npz`` (next to the seven tasks' own keys).
PREDICTION_PREFIX = "pairs:"


def spearman_interval(
    gold: np.ndarray, cosine: np.ndarray, resamples: int = INTERVAL_RESAMPLES, seed: int = INTERVAL_SEED
) -> tuple[float, float]:
    """The bootstrap 95% percentile interval of Spearman x100 over resampled pairs."""
    gold = np.asarray(gold, dtype=np.float64)
    cosine = np.asarray(cosine, dtype=np.float64)
    rng = np.random.default_rng(seed)
    chunks = []
    for begin in range(0, resamples, 100):  # bounded memory for large sets
        idx = rng.integers(0, len(gold), size=(min(100, resamples - begin), len(gold)))
        chunks.append(rowwise_spearman(gold[idx], cosine[idx]))
    values = np.concatenate(chunks)
    values = values[~np.isnan(values)]
    low, high = np.percentile(values, [2.5, 97.5]) if len(values) else (np.nan, np.nan)
    return float(low), float(high)


def score_pair_sets(
    model: SentenceTransformer,
    sets: Sequence[PairSet],
    batch_size: int = DEFAULT_BATCH_SIZE,
    show_progress: bool = False,
) -> tuple[dict[str, dict], dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]]:
    """``({name: {"spearman", "pairs", "low", "high", "source"}}, predictions)`` for ``sets``.

    ``predictions`` is ``{PREDICTION_PREFIX + name: {"pairs": (gold, cosine)}}``, the layout of
    :func:`hardcse.evaluation.predictions.save_predictions`. Every distinct sentence over all sets
    is encoded once.
    """
    if not sets:
        return {}, {}
    data = {s.name: {"pairs": s.pairs} for s in sets}
    scored = score_tasks(model, data, batch_size=batch_size, show_progress=show_progress, return_predictions=True)
    results: dict[str, dict] = {}
    predictions: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for pair_set in sets:
        entry = scored[pair_set.name]
        gold, cosine = entry["predictions"]["pairs"]
        low, high = spearman_interval(gold, cosine)
        results[pair_set.name] = {
            "spearman": entry["spearman"],
            "pairs": entry["pairs"],
            "low": low,
            "high": high,
            "source": pair_set.source,
        }
        predictions[PREDICTION_PREFIX + pair_set.name] = {"pairs": (gold, cosine)}
    return results, predictions


def format_pair_table(results: Mapping[str, Mapping[str, float]], title: str = "") -> str:
    """A plain table: one row per pair set, Spearman x100 with its 95% interval and pair count."""
    width = max([len("pairs"), *(len(name) for name in results)])
    lines = [title] if title else []
    lines.append(f"{'pairs':<{width}}  {'Spearman':>8}  {'95% interval':>15}  {'n':>6}")
    for name, r in results.items():
        interval = f"[{r['low']:.2f}, {r['high']:.2f}]"
        lines.append(f"{name:<{width}}  {r['spearman']:>8.2f}  {interval:>15}  {r['pairs']:>6}")
    return "\n".join(lines)


def format_pair_comparison(before: Mapping[str, Mapping[str, float]], after: Mapping[str, Mapping[str, float]]) -> str:
    """Untrained and trained scores of each test pair set, with the trained score's interval."""
    width = max([len("pairs"), *(len(name) for name in after)])
    lines = [f"{'pairs':<{width}}  {'untrained':>9}  {'trained':>8}  {'95% interval':>15}  {'n':>6}"]
    for name, r in after.items():
        start = before.get(name, {}).get("spearman")
        shown = f"{start:>9.2f}" if isinstance(start, float) else f"{'n/a':>9}"
        interval = f"[{r['low']:.2f}, {r['high']:.2f}]"
        lines.append(f"{name:<{width}}  {shown}  {r['spearman']:>8.2f}  {interval:>15}  {r['pairs']:>6}")
    return "\n".join(lines)
