"""STS evaluation the way the SimCSE-family papers do it (SentEval protocol), alone or during training."""

from __future__ import annotations

from hardcse.evaluation.sts import (
    AGGREGATIONS,
    STSEvaluator,
    evaluate_model,
    format_comparison,
    format_table,
)

__all__ = ["AGGREGATIONS", "STSEvaluator", "evaluate_model", "format_comparison", "format_table"]
