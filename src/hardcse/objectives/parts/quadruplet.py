"""HSimCSE's quadruplet hinge (IJCNN 2023, official code ``xubodhu/HSimCSE``), an auxiliary term.

.. math::

    \\mathcal L_{quad} = \\frac1N\\sum_i \\max\\big(0,\\; w_b\\, m_i + w_c\\, q_i - p_i + \\mu\\big),

added as ``lambda * L_quad`` (loss ``quad``), with, for anchor ``i``, the cosines ``p_i`` to an
injected positive (HSimCSE: ``adversarial``, :mod:`hardcse.objectives.parts.adversarial`),
``m_i`` to the in-batch hard negative (``in_batch_hardest``, :mod:`hardcse.objectives.parts.
in_batch`) and ``q_i`` to the corpus hard negative (``corpus``, :mod:`hardcse.objectives.parts.
corpus_index`), read from the batch's slots. Official constants: ``w_b = 0.9``, ``w_c = 0.11``,
``lambda = 0.22``, ``mu = 0``. Gradient reaches ``z`` through ``m``, ``p`` and ``q`` and ``z'``
through ``m`` only when the positive and the corpus negative are constants (as HSimCSE's are).
Under DDP the terms use the gathered global batch, so every process computes the same value.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from hardcse.objectives.base import ContrastiveBatch, Part
from hardcse.objectives.citations import HSIMCSE_CITATION


def quadruplet_hinge(
    m: Tensor, q: Tensor, p: Tensor, w_inbatch: float = 0.9, w_corpus: float = 0.11, margin: float = 0.0
) -> Tensor:
    """Per-row hinge ``relu(w_inbatch * m + w_corpus * q - p + margin)`` (official: 0.9, 0.11, 0)."""
    return F.relu(w_inbatch * m + w_corpus * q - p + margin)


class QuadrupletHinge(Part):
    """The quadruplet term over injected values (module doc): loss ``quad = weight * L_quad``.

    ``positive``, ``in_batch`` and ``corpus`` name the slots it reads (a missing one is an error
    naming what the recipe publishes). A batch of one sentence gives ``quad = 0``.

    Diagnostics (floats): ``p_mean``, ``m_mean``, ``q_mean``, ``hinge_active`` (fraction of rows
    with a positive hinge), ``quad`` (unweighted ``L_quad``).
    """

    name = "quadruplet_hinge"
    stage = "term"
    title = "HSimCSE"
    citation = HSIMCSE_CITATION

    def __init__(
        self,
        weight: float = 0.22,
        w_inbatch: float = 0.9,
        w_corpus: float = 0.11,
        margin: float = 0.0,
        positive: str = "adversarial",
        in_batch: str = "in_batch_hardest",
        corpus: str = "corpus",
    ) -> None:
        super().__init__()
        self.weight = float(weight)
        self.w_inbatch = float(w_inbatch)
        self.w_corpus = float(w_corpus)
        self.margin = float(margin)
        self.positive = positive
        self.in_batch = in_batch
        self.corpus = corpus

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "weight": self.weight,
            "w_inbatch": self.w_inbatch,
            "w_corpus": self.w_corpus,
            "margin": self.margin,
            "positive": self.positive,
            "in_batch": self.in_batch,
            "corpus": self.corpus,
        }

    def contribute(self, batch: ContrastiveBatch) -> None:
        if batch.size < 2:
            batch.add_loss("quad", batch.z1.sum() * 0.0)
            return
        m = batch.hard_negative_cos(self.in_batch)
        p = batch.positive_cos(self.positive)
        q = batch.hard_negative_cos(self.corpus)
        hinge = quadruplet_hinge(m, q, p, self.w_inbatch, self.w_corpus, self.margin)
        l_quad = hinge.mean()
        batch.add_loss("quad", self.weight * l_quad)
        with torch.no_grad():
            batch.diagnostics.update(
                {
                    "p_mean": float(p.mean()),
                    "m_mean": float(m.mean()),
                    "q_mean": float(q.mean()),
                    "hinge_active": float((hinge > 0).float().mean()),
                    "quad": float(l_quad),
                }
            )
