"""Contrastive objectives built from small parts (DESIGN.md: positives, negatives, false
negatives, auxiliary terms), and the method registry that names and composes them
(:mod:`hardcse.objectives.registry`)."""

from typing import Any

from hardcse.objectives.base import ContrastiveBatch, HardCSELoss, Part
from hardcse.objectives.registry import (
    BuildContext,
    Built,
    Method,
    StepHook,
    StepInfo,
    get_method,
    method_names,
    parse_recipe,
    register,
    unregister,
)

__all__ = [
    "BuildContext",
    "Built",
    "ContrastiveBatch",
    "HardCSELoss",
    "Method",
    "Part",
    "StepHook",
    "StepInfo",
    "get_method",
    "method_names",
    "parse_recipe",
    "register",
    "unregister",
]


def __getattr__(name: str) -> Any:
    if name == "ContrastiveLoss":  # the old name of HardCSELoss (deprecated; see hardcse.objectives.base)
        from hardcse.objectives import base

        return base.ContrastiveLoss
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
