"""Contrastive objectives built from small parts: the batch (:class:`ContrastiveBatch`), the parts
of each method (:class:`Part`: positives, negatives, false negatives, auxiliary terms), the
contrastive head (:class:`ContrastiveHead`, :class:`InfoNCE` by default) and the loss that runs
them (:class:`HardCSELoss`); and the method registry that names and composes them
(:mod:`hardcse.objectives.registry`, plugins included)."""

from hardcse.objectives.base import STAGES, ContrastiveBatch, HardCSELoss, Part
from hardcse.objectives.heads import ContrastiveHead, InfoNCE
from hardcse.objectives.registry import (
    ENTRY_POINT_GROUP,
    BuildContext,
    Built,
    Method,
    StepHook,
    StepInfo,
    compose,
    get_method,
    load_plugins,
    method_names,
    parse_recipe,
    register,
    unregister,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "STAGES",
    "BuildContext",
    "Built",
    "ContrastiveBatch",
    "ContrastiveHead",
    "HardCSELoss",
    "InfoNCE",
    "Method",
    "Part",
    "StepHook",
    "StepInfo",
    "compose",
    "get_method",
    "load_plugins",
    "method_names",
    "parse_recipe",
    "register",
    "unregister",
]
