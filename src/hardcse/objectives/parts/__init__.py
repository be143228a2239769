"""The parts a recipe injects into the contrastive frame, one concept per module.

Each part is a :class:`~hardcse.objectives.base.Part` with a ``stage`` (when in a step it runs),
``name``, ``title``, ``citation`` and ``get_config_dict()``; parts hand their results to each other
through the named slots of :class:`~hardcse.objectives.base.ContrastiveBatch`.

========================  ==================  =====================================================
part                      stage               what it does
========================  ==================  =====================================================
AdversarialPositive       ``positive``        publishes positive ``adversarial`` (HSimCSE)
CentroidNegatives         ``negative``        K-means centroid columns; publishes the same-cluster
                                              false-negative mask (ClusterNS)
HardestInBatchNegative    ``negative``        publishes hard negative ``in_batch_hardest``
CorpusIndexNegative       ``negative``        publishes hard negative ``corpus`` from a faiss corpus
                                              index (any method may inject it)
MaskFalseNegatives        ``false_negative``  removes marked pairs from the InfoNCE denominator
BidirectionalMarginLoss   ``false_negative``  BML penalty on marked pairs (loss ``bml``)
QuadrupletHinge           ``term``            HSimCSE's hinge over a positive and two hard
                                              negatives (loss ``quad``)
========================  ==================  =====================================================

Ignoring false negatives is injecting no handler. The classes are importable from this package
(loaded on first use, so naming one does not import faiss) or from their modules.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "AdversarialPositive": "adversarial",
    "CentroidNegatives": "centroids",
    "HardestInBatchNegative": "in_batch",
    "CorpusIndexConfig": "corpus_index",
    "CorpusIndexNegative": "corpus_index",
    "IndexRefreshHook": "corpus_index",
    "build_corpus_index": "corpus_index",
    "MaskFalseNegatives": "false_negatives",
    "BidirectionalMarginLoss": "false_negatives",
    "QuadrupletHinge": "quadruplet",
}

__all__ = sorted(_MODULES)


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
