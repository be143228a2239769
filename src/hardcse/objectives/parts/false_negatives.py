"""False-negative handlers: what a recipe does with the pairs a miner marked as false negatives
(``batch.false_negatives``, e.g. ClusterNS's same-cluster pairs; stage ``false_negative``).

* ignore them: inject no handler (they stay negatives);
* :class:`MaskFalseNegatives`: remove them from the InfoNCE denominator, ``sum_{j: M_ij = 0}``
  (an option of hardcse's ClusterNS, ``false_negatives: mask``; not in the official code);
* :class:`BidirectionalMarginLoss`: the bidirectional margin loss (BML) of SNCSE as ClusterNS
  uses it (Deng et al., Findings of ACL 2023, official code ``djz233/ClusterNS``),

  .. math::

      \\mathcal L_{BML} = \\frac1{N^2} \\sum_{i,j} \\max(0, \\Delta_{ij} + \\alpha)
          + \\max(0, -\\Delta_{ij} - \\beta), \\qquad \\Delta_{ij} = M_{ij} (S_{ij} - S_{ii}),

  ``S = cos(z, z')`` unscaled, ``M`` the mask; added as ``lambda * L_BML`` (loss ``bml``).
  Unmasked entries contribute the constant ``max(0, alpha)`` and no gradient, as in the code.
  Option beyond the code: ``normalize="masked"`` (mean over the masked pairs only).

Both may be injected (ClusterNS ``false_negatives: both``); they read the same mask and neither
changes what the other sees, so their order does not matter.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from hardcse.errors import ConfigError
from hardcse.objectives.base import ContrastiveBatch, Part
from hardcse.objectives.citations import CLUSTERNS_CITATION

BML_NORMALIZATIONS = ("all", "masked")


def bml_loss(sim: Tensor, mask: Tensor, alpha: float, beta: float, normalize: str = "all") -> Tensor:
    """Bidirectional margin loss over the false-negative pairs ``mask``.

    ``Delta_ij = M_ij (S_ij - S_ii)``; each entry gives ``max(0, Delta + alpha) +
    max(0, -Delta - beta)``. ``normalize="all"`` averages over all N^2 entries (unmasked ones
    contribute the constant ``max(0, alpha)``); ``"masked"`` sums the masked entries only and
    divides by their number (0 if none).
    """
    s = sim.float()
    m = mask.to(s.dtype)
    delta = m * (s - s.diagonal().unsqueeze(1))
    terms = F.relu(delta + alpha) + F.relu(-delta - beta)
    if normalize == "all":
        return terms.mean()
    return (terms * m).sum() / m.sum().clamp_min(1.0)


class MaskFalseNegatives(Part):
    """Removes the marked false negatives from each row's InfoNCE denominator (module doc)."""

    name = "mask_false_negatives"
    stage = "false_negative"
    title = "ClusterNS"
    citation = CLUSTERNS_CITATION

    def contribute(self, batch: ContrastiveBatch) -> None:
        if batch.false_negatives is not None:
            batch.remove_in_batch(batch.false_negatives)


class BidirectionalMarginLoss(Part):
    """BML on the marked false negatives (module doc): loss ``bml = weight * L_BML``.

    ``weight`` 0 adds no loss component and only records the diagnostic ``bml`` (the unweighted
    value, 0 while no pairs are marked), which ClusterNS logs whatever its false-negative mode.
    With ``weight > 0`` the loss ``bml`` is logged every step (0 while no miner marked pairs).
    """

    name = "bml"
    stage = "false_negative"
    title = "ClusterNS"
    citation = CLUSTERNS_CITATION

    def __init__(self, weight: float = 1e-4, alpha: float = 0.2, beta: float = 0.5, normalize: str = "all") -> None:
        super().__init__()
        if weight < 0:
            raise ConfigError(f"the BML weight must be >= 0, got {weight}.")
        if normalize not in BML_NORMALIZATIONS:
            raise ConfigError(f"unknown BML normalize '{normalize}'; choose one of {', '.join(BML_NORMALIZATIONS)}.")
        self.weight = float(weight)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.normalize = normalize

    def get_config_dict(self) -> dict[str, Any]:
        return {"weight": self.weight, "alpha": self.alpha, "beta": self.beta, "normalize": self.normalize}

    def contribute(self, batch: ContrastiveBatch) -> None:
        mask = batch.false_negatives
        if mask is None:
            if self.weight > 0:
                batch.add_loss("bml", batch.sim.new_zeros(()))
            batch.diagnostics["bml"] = 0.0
            return
        value = bml_loss(batch.sim, mask, self.alpha, self.beta, self.normalize)
        if self.weight > 0:
            batch.add_loss("bml", self.weight * value)
        batch.diagnostics["bml"] = float(value.detach().float())
