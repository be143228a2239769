"""STS evaluation the way the SimCSE-family papers do it (SentEval protocol), alone or during training."""

from __future__ import annotations

from hardcse.evaluation.evaluator import STSEvaluator
from hardcse.evaluation.scoring import AGGREGATIONS
from hardcse.evaluation.sts import evaluate_model
from hardcse.evaluation.tables import format_comparison, format_table

__all__ = ["AGGREGATIONS", "STSEvaluator", "evaluate_model", "format_comparison", "format_table"]
