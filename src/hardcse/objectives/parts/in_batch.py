"""The hardest in-batch negative (HSimCSE's in-batch hard negative; IJCNN 2023, official code
``xubodhu/HSimCSE``), a negative miner.

.. math::

    m_i = \\max_{j \\ne i} s(z_i, z'_j),

the largest off-diagonal entry of row ``i`` of the batch's unscaled cosine matrix, **with**
gradient (into ``z_i`` and the chosen ``z'_j``). Published as hard negative ``in_batch_hardest``
(:meth:`~hardcse.objectives.base.ContrastiveBatch.add_hard_negative`); it adds no column (every
in-batch negative is already in the InfoNCE denominator).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from hardcse.objectives.base import ContrastiveBatch, Part
from hardcse.objectives.citations import HSIMCSE_CITATION


def hardest_in_batch(sim: Tensor) -> Tensor:
    """``m_i = max_{j != i} sim[i, j]`` (N), with gradient."""
    eye = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
    return sim.masked_fill(eye, float("-inf")).max(dim=1).values


class HardestInBatchNegative(Part):
    """Publishes ``m_i`` (module doc) as hard negative ``key``; a batch of one sentence has none."""

    name = "hardest_in_batch_negative"
    stage = "negative"
    title = "HSimCSE"
    citation = HSIMCSE_CITATION

    def __init__(self, key: str = "in_batch_hardest") -> None:
        super().__init__()
        self.key = key

    def get_config_dict(self) -> dict[str, Any]:
        return {"key": self.key}

    def contribute(self, batch: ContrastiveBatch) -> None:
        if batch.size >= 2:
            batch.add_hard_negative(self.key, hardest_in_batch(batch.sim))
