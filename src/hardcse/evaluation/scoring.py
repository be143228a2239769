"""SentEval-compatible STS scoring: cosine similarity, Spearman x100, the papers' aggregations.

The protocol is that of the SentEval fork used by SimCSE, ClusterNS and HSimCSE
(SentEval: Conneau and Kiela, LREC 2018; SimCSE's ``SentEval/senteval/sts.py``):

* each pair is scored by the **cosine similarity** of its two sentence embeddings (NaN
  embedding entries and NaN cosines become 0, as in SentEval);
* a task's number is the **Spearman correlation x 100** with the gold scores;
* STS12-16 aggregate their sub-datasets with ``all`` (one Spearman over the concatenated
  sub-datasets: the papers' setting and the default), ``mean`` (unweighted mean of the
  per-sub-dataset values) or ``wmean`` (mean weighted by pair count);
* STS-B and SICK-R use their ``test`` split (``dev`` for model selection);
* ``avg`` is the mean of the per-task values **rounded to two decimals first**, like SimCSE's
  ``evaluation.py``.

Pure numerics on arrays and task names; encoding lives in :mod:`hardcse.evaluation.encoding`.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from hardcse.data.sts import SPLIT_TASKS, TASKS, canonical_split, canonical_task
from hardcse.errors import ConfigError

logger = logging.getLogger(__name__)

#: Ways to combine the sub-datasets of STS12-16 into one number.
AGGREGATIONS: tuple[str, ...] = ("all", "mean", "wmean")


def check_aggregation(aggregation: str) -> str:
    """Return ``aggregation`` lower-cased, or raise :class:`ConfigError` if it is unknown."""
    key = str(aggregation).strip().lower()
    if key not in AGGREGATIONS:
        raise ConfigError(f"unknown aggregation '{aggregation}'; choose one of {', '.join(AGGREGATIONS)}.")
    return key


def spearman100(gold: np.ndarray, system: np.ndarray) -> float:
    """Spearman's rank correlation x 100 (NaN when either side is constant)."""
    gold = np.asarray(gold, dtype=np.float64)
    system = np.asarray(system, dtype=np.float64)
    if len(gold) < 2 or np.all(gold == gold[0]) or np.all(system == system[0]):
        logger.warning("Spearman is undefined for %d pairs with constant scores; reporting NaN.", len(gold))
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(gold, system)[0]) * 100.0


def cosine_rows(emb1: np.ndarray, emb2: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity in float64; NaN entries and undefined cosines become 0 (SentEval)."""
    a = np.nan_to_num(np.asarray(emb1)).astype(np.float64)
    b = np.nan_to_num(np.asarray(emb2)).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.einsum("ij,ij->i", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return np.nan_to_num(cos, nan=0.0, posinf=0.0, neginf=0.0)


def aggregate(subsets: Mapping[str, tuple[np.ndarray, np.ndarray]], aggregation: str = "all") -> dict:
    """Score one task from its sub-datasets' ``(gold, system)`` arrays.

    Returns ``{"spearman": float, "pairs": int, "subsets": {name: float}}`` where ``spearman``
    is combined by ``aggregation``: ``all`` (Spearman of the concatenation), ``mean`` or
    ``wmean`` (weighted by pairs) of the per-subset values. For one subset all three agree.
    """
    aggregation = check_aggregation(aggregation)
    per_subset = {name: spearman100(gold, system) for name, (gold, system) in subsets.items()}
    sizes = np.array([len(gold) for gold, _ in subsets.values()], dtype=np.float64)
    values = np.array(list(per_subset.values()), dtype=np.float64)
    if aggregation == "all" and len(subsets) > 1:
        value = spearman100(
            np.concatenate([gold for gold, _ in subsets.values()]),
            np.concatenate([system for _, system in subsets.values()]),
        )
    elif aggregation == "wmean":
        value = float(np.sum(values * sizes) / np.sum(sizes))
    else:  # "mean", or "all" with a single subset
        value = float(np.mean(values))
    return {"spearman": value, "pairs": int(sizes.sum()), "subsets": per_subset}


def resolve_tasks(tasks: Sequence[str] | None, split: str = "test") -> list[str]:
    """Canonical task names for ``tasks`` (default: all seven for ``test``, STS-B and SICK-R otherwise).

    Raises:
        ConfigError: unknown task or split, no task, or a test-only task with another split.
    """
    split = canonical_split(split)
    if tasks is None:
        return list(TASKS) if split == "test" else list(SPLIT_TASKS)
    names = list(dict.fromkeys(canonical_task(t) for t in tasks))
    if not names:
        raise ConfigError("no STS task given; name at least one, e.g. STS-B.")
    if split != "test":
        test_only = [t for t in names if t not in SPLIT_TASKS]
        if test_only:
            raise ConfigError(
                f"{', '.join(test_only)} only has a test set, so it cannot be scored on the {split} split; "
                "use --split test or evaluate only STS-B and SICK-R."
            )
    return names


def average(task_results: Mapping[str, Mapping[str, Any]]) -> float:
    """Mean of the per-task Spearman values, each rounded to two decimals first (SimCSE's ``Avg``)."""
    values = [round(r["spearman"], 2) for r in task_results.values()]
    return float(np.mean(values)) if values else math.nan


def centered_ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis, minus their mean (ties share a rank)."""
    from scipy.stats import rankdata

    ranks = rankdata(np.asarray(values, dtype=np.float64), axis=-1)
    return ranks - ranks.mean(axis=-1, keepdims=True)


def spearman_of_ranks(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman x100 from two centred rank arrays (Pearson of the ranks), row by row."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return (a * b).sum(axis=-1) / np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1)) * 100.0


def rowwise_spearman(gold: np.ndarray, system: np.ndarray) -> np.ndarray:
    """Spearman x100 of each row of ``gold`` against the same row of ``system`` (average ranks for ties).

    Rows where either side is constant give NaN (the correlation is undefined).
    """
    return spearman_of_ranks(centered_ranks(gold), centered_ranks(system))
