"""Contrastive heads: the loss over the logits of a :class:`~hardcse.objectives.base.ContrastiveBatch`.

A head runs once per step, after every part of the recipe has added its negative columns and
removed its false negatives, so it sees the whole batch whatever the order of the methods in the
recipe. It reads ``batch.logits()`` (``N x (N + M)``: row ``i`` is anchor ``z_i``; column ``i`` its
positive ``z'_i``; the other in-batch columns and the ``M`` extra columns its negatives, already
divided by the temperature, removed entries ``-inf``) and returns a scalar, logged under the
head's ``name``.

:class:`InfoNCE` is the default (the SimCSE loss). A method replaces it by returning another head
from its ``build`` (``Built(head=...)``; at most one method of a recipe may do so). A head has a
``citation`` and a ``get_config_dict`` like the parts and the loss (the sentence-transformers
loss contract).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch.nn.functional as F
from torch import Tensor, nn

from hardcse.objectives.citations import SIMCSE_CITATION

if TYPE_CHECKING:  # the batch is only passed through here
    from hardcse.objectives.base import ContrastiveBatch


class ContrastiveHead(nn.Module):
    """The final loss of the contrastive frame; subclasses implement :meth:`forward`.

    Attributes:
        name: the key of the head's loss among the logged components (``infonce``).
        title: the method's name as papers write it, for model cards.
        citation: BibTeX of the source ("" if none).
    """

    name: str = "head"
    title: str = ""
    citation: str = ""

    def forward(self, batch: ContrastiveBatch) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def get_config_dict(self) -> dict[str, Any]:
        """The head's settings (none by default)."""
        return {}


class InfoNCE(ContrastiveHead):
    """The SimCSE InfoNCE (Gao et al., 2021, Eq. 4): cross-entropy over the logits with label ``i``,

    .. math::

        \\mathcal L = \\frac1N \\sum_i -\\log \\frac{e^{\\ell_{ii}}}{\\sum_j e^{\\ell_{ij}}},
        \\qquad \\ell = \\text{batch.logits()},

    the positive in its own denominator (as in the paper and the official code).
    """

    name = "infonce"
    title = "SimCSE"
    citation = SIMCSE_CITATION

    def forward(self, batch: ContrastiveBatch) -> Tensor:
        return F.cross_entropy(batch.logits(), batch.labels())
