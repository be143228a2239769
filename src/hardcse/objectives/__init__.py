"""Contrastive objectives built from small parts (DESIGN.md: positives, negatives, false
negatives, auxiliary terms) and the method presets that compose them."""

from hardcse.objectives.base import ContrastiveBatch, ContrastiveLoss, Part

__all__ = ["ContrastiveBatch", "ContrastiveLoss", "Part"]
