"""SimCSE (Gao et al., EMNLP 2021): the contrastive frame itself, with no extra parts.

The loss is the unsupervised InfoNCE of :mod:`hardcse.objectives.base` over two dropout views,

.. math::

    \\mathcal L = \\frac1N \\sum_i -\\log \\frac{e^{s(z_i, z'_i)/\\tau}}{\\sum_j e^{s(z_i, z'_j)/\\tau}},

cosine ``s``, ``tau = 0.05``. Every other method adds parts to this frame, so SimCSE has no
settings of its own (temperature, batch and learning rate are training settings).
"""

from __future__ import annotations

from dataclasses import dataclass

from hardcse.objectives.citations import SIMCSE_CITATION
from hardcse.objectives.registry import BuildContext, Built, Method, paper_preset

#: The SimCSE BibTeX (also the default head's, :mod:`hardcse.objectives.heads`).
CITATION = SIMCSE_CITATION


@dataclass
class SimCSEConfig:
    """SimCSE has no method settings (the frame's temperature is ``TrainConfig.temperature``)."""

    def validate(self) -> None:
        """Nothing to check."""


def build_simcse(config: SimCSEConfig, context: BuildContext) -> Built:
    """No parts, no hooks: the frame's InfoNCE is the whole loss."""
    return Built()


#: The official unsupervised SimCSE settings per backbone (paper, Table D.1 / official README).
SIMCSE_PRESETS: dict[str, dict] = {
    "simcse-bert-base": paper_preset("bert-base-uncased", 64, 3e-5, "simcse"),
    "simcse-bert-large": paper_preset("bert-large-uncased", 64, 1e-5, "simcse"),
    "simcse-roberta-base": paper_preset("roberta-base", 512, 1e-5, "simcse"),
    "simcse-roberta-large": paper_preset("roberta-large", 512, 3e-5, "simcse"),
}

METHOD = Method(
    name="simcse",
    config_class=SimCSEConfig,
    build=build_simcse,
    presets=SIMCSE_PRESETS,
    # The seven-task STS average the paper reports ("all" aggregation).
    published={
        "simcse-bert-base": 76.25,
        "simcse-bert-large": 78.41,
        "simcse-roberta-base": 76.57,
        "simcse-roberta-large": 78.90,
    },
    citation=CITATION,
    title="SimCSE",
    summary="unsupervised SimCSE: two dropout views, in-batch negatives (InfoNCE)",
)
