"""Scoring a run's encoder on its test tasks and test pair sets: the untrained encoder before the
first step (:mod:`hardcse.training.start`) and the exported model at the end of a run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importing this module (the comparison does) loads no model library
    from sentence_transformers import SentenceTransformer

    from hardcse.training.config import TrainConfig


def score_tests(
    model: SentenceTransformer,
    config: TrainConfig,
    test_data: dict,
    test_sets: list[Any],
    bars: bool,
    model_name: str,
    pooling: str,
    predictions: bool = False,
) -> tuple[dict, dict]:
    """The STS tasks' evaluation (``evaluate_model``'s dict, ``tasks`` empty when none are scored)
    with ``"pairs"``: each test pair set's score and interval; and the pair sets' predictions."""
    from hardcse.evaluation.pairs import PREDICTION_PREFIX, score_pair_sets
    from hardcse.evaluation.sts import evaluate_model

    if test_data:
        result = evaluate_model(
            model,
            tasks=config.test_tasks,
            data=test_data,
            batch_size=config.eval_batch_size,
            show_progress=bars,
            model_name=model_name,
            pooling=pooling,
            return_predictions=predictions,
        )
    else:
        result = {"model": model_name, "pooling": pooling, "tasks": {}, "avg": None}
        if predictions:
            result["predictions"] = {}
    pairs, pair_predictions = score_pair_sets(model, test_sets, batch_size=config.eval_batch_size)
    result["pairs"] = pairs
    flat = {name.removeprefix(PREDICTION_PREFIX): subsets["pairs"] for name, subsets in pair_predictions.items()}
    return result, (pair_predictions if predictions else flat)
