"""Evaluate a model on STS tasks the way the SimCSE-family papers do (SentEval protocol).

This module joins the parts: :func:`score_tasks` encodes every distinct sentence of the loaded
tasks once (:mod:`hardcse.evaluation.encoding`), scores each pair by cosine similarity and each
task by Spearman x 100 (:mod:`hardcse.evaluation.scoring`); :func:`evaluate_model` loads the
tasks and returns the result the CLI, the trainer and the comparison report use. Two identical
sentences score exactly 1, so the 61 such pairs of STS12 tie rather than being ranked by rounding
noise.

The other concepts live in their own modules and are re-exported here, so imports from
``hardcse.evaluation.sts`` keep working: scoring and task resolution
(:mod:`~hardcse.evaluation.scoring`), the encoding engine (:mod:`~hardcse.evaluation.encoding`),
Markdown tables (:mod:`~hardcse.evaluation.tables`), ``.npz`` predictions
(:mod:`~hardcse.evaluation.predictions`) and the trainer evaluator
(:mod:`~hardcse.evaluation.evaluator`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sentence_transformers import SentenceTransformer

from hardcse.data.sts import TASKS, STSPairs, canonical_split, load_tasks
from hardcse.evaluation.encoding import (  # noqa: F401 - _pretokenize, _encode_pretokenized: re-exported for tests
    DEFAULT_BATCH_SIZE,
    PRETOKENIZE_CHUNK,
    PRETOKENIZE_LIMIT,
    _encode_pretokenized,
    _pretokenize,
    encode_unique,
    token_lengths,
    untruncated,
)
from hardcse.evaluation.predictions import load_predictions, save_predictions
from hardcse.evaluation.scoring import (
    AGGREGATIONS,
    aggregate,
    average,
    check_aggregation,
    cosine_rows,
    resolve_tasks,
    spearman100,
)
from hardcse.evaluation.tables import format_comparison, format_table, markdown_table
from hardcse.models.encoder import position_limit

logger = logging.getLogger(__name__)

TaskData = Mapping[str, Mapping[str, STSPairs]]

__all__ = [
    "AGGREGATIONS",
    "DEFAULT_BATCH_SIZE",
    "PRETOKENIZE_CHUNK",
    "PRETOKENIZE_LIMIT",
    "TaskData",
    "aggregate",
    "average",
    "check_aggregation",
    "cosine_rows",
    "encode_unique",
    "evaluate_model",
    "format_comparison",
    "format_table",
    "load_predictions",
    "markdown_table",
    "position_limit",
    "resolve_tasks",
    "save_predictions",
    "score_tasks",
    "spearman100",
    "token_lengths",
    "untruncated",
]


def score_tasks(
    model: SentenceTransformer,
    data: TaskData,
    aggregation: str = "all",
    batch_size: int = DEFAULT_BATCH_SIZE,
    show_progress: bool = False,
    return_predictions: bool = False,
    fused_kernels: bool = True,
) -> dict[str, dict]:
    """Score already loaded tasks: ``{task: {"spearman", "pairs", "subsets"}}`` (Spearman x 100).

    Every distinct sentence over all tasks is encoded exactly once; a pair of two identical
    sentences scores exactly 1. With ``return_predictions`` each task also gets
    ``"predictions": {subset: (gold, cosine)}`` (float64 arrays, one entry per pair).
    ``fused_kernels`` is passed to :func:`encode_unique`.
    """
    aggregation = check_aggregation(aggregation)
    index: dict[str, int] = {}
    positions: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    for task, subsets in data.items():
        for subset, pairs in subsets.items():
            positions[task, subset] = (
                np.array([index.setdefault(s, len(index)) for s in pairs.sentences1], dtype=np.int64),
                np.array([index.setdefault(s, len(index)) for s in pairs.sentences2], dtype=np.int64),
            )
    logger.info("encoding %d distinct sentences", len(index))
    embeddings = encode_unique(
        model, list(index), batch_size=batch_size, show_progress=show_progress, fused_kernels=fused_kernels
    )
    results = {}
    for task, subsets in data.items():
        scored = {}
        for subset, pairs in subsets.items():
            idx1, idx2 = positions[task, subset]
            cosine = cosine_rows(embeddings[idx1], embeddings[idx2])
            # Two identical sentences: exactly 1 (unless the vector is zero/NaN: 0, as SentEval), so
            # such pairs tie instead of being ordered by last-bit rounding (STS12 has 61 of them).
            cosine[(idx1 == idx2) & (cosine != 0)] = 1.0
            scored[subset] = (pairs.scores, cosine)
        results[task] = aggregate(scored, aggregation)
        if return_predictions:
            results[task]["predictions"] = scored
    return results


def evaluate_model(
    model: SentenceTransformer,
    tasks: Sequence[str] | None = None,
    data_dir: str | Path | None = None,
    aggregation: str = "all",
    split: str = "test",
    batch_size: int = DEFAULT_BATCH_SIZE,
    show_progress: bool = True,
    model_name: str | None = None,
    pooling: str | None = None,
    data: TaskData | None = None,
    return_predictions: bool = False,
    fused_kernels: bool = True,
) -> dict:
    """Evaluate ``model`` on STS tasks the way the SimCSE-family papers do.

    Args:
        model: any sentence-transformers model (see :func:`hardcse.models.loading.load_sentence_model`).
        tasks: task names or aliases; default all seven for ``split="test"``, STS-B and SICK-R
            otherwise (STS12-16 only have test data).
        data_dir: the data directory (``None``: ``$HARDCSE_DATA`` or ``~/.cache/hardcse/data``).
        aggregation: ``all`` (default, the papers'), ``mean`` or ``wmean`` for STS12-16.
        split: ``test``, ``dev`` or ``train``; applies to STS-B and SICK-R.
        batch_size: sentences per forward pass.
        show_progress: show the encoding progress bar.
        model_name: the name stored in the result (default: the transformer's name or path).
        pooling: the pooling name stored in the result (default: read from the model).
        data: tasks already loaded with :func:`hardcse.data.sts.load_tasks` with the same
            ``split`` (skips reading files); an empty mapping scores no task (``tasks`` empty, ``avg`` NaN).
        return_predictions: also return ``"predictions": {task: {subset: (gold, cosine)}}``, the
            per-pair scores (numpy arrays, not JSON-serialisable; see :func:`save_predictions`).
        fused_kernels: on a float32 CPU model, run the linear layers on oneDNN with bias and GELU
            fused (faster; equal to float32 rounding). ``False`` uses torch's stock kernels.

    Returns:
        ``{"model", "pooling", "aggregation", "split", "tasks": {task: {"spearman", "pairs",
        "subsets": {name: value}}}, "avg", "seconds"}``; every correlation is Spearman x 100 at
        full precision, ``avg`` is the mean of the two-decimal task values.

    Encoding is untruncated: ``model.max_seq_length`` is raised to the position limit while
    encoding (SentEval does not truncate) and restored afterwards.
    """
    from hardcse.models.loading import describe_pooling

    start = time.perf_counter()
    aggregation = check_aggregation(aggregation)
    split = canonical_split(split)
    if data is None:
        names = resolve_tasks(tasks, split)
        data = load_tasks(names, data_dir, split)
    elif data:
        names = resolve_tasks(list(data) if tasks is None else tasks, split)
        data = {t: data[t] for t in names}
    task_results = {}
    if data:
        task_results = score_tasks(
            model, data, aggregation, batch_size, show_progress, return_predictions, fused_kernels
        )
    predictions = {t: r.pop("predictions") for t, r in task_results.items() if "predictions" in r}
    ordered = {t: task_results[t] for t in TASKS if t in task_results}
    result = {
        "model": model_name or _model_name(model),
        "pooling": pooling or describe_pooling(model),
        "aggregation": aggregation,
        "split": split,
        "tasks": ordered,
        "avg": average(ordered),
        "seconds": time.perf_counter() - start,
    }
    if return_predictions:
        result["predictions"] = {t: predictions[t] for t in ordered}
    return result


def _model_name(model: SentenceTransformer) -> str:
    config = getattr(getattr(model[0], "auto_model", None), "config", None)
    return str(getattr(config, "_name_or_path", "") or type(model).__name__)


def __getattr__(name: str) -> Any:
    """``STSEvaluator`` for ``from hardcse.evaluation.sts import STSEvaluator``; it is imported on
    first use because :mod:`hardcse.evaluation.evaluator` itself builds on :func:`score_tasks`."""
    if name == "STSEvaluator":
        from hardcse.evaluation.evaluator import STSEvaluator

        return STSEvaluator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
