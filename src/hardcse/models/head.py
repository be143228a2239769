"""SimCSE's training-only MLP head as a sentence-transformers module.

``z = tanh(W h + b)`` with ``W`` d x d, freshly initialised as BERT initialises linear layers
(normal, std 0.02, zero bias) and never loaded from BERT's pretrained pooler (SimCSE paper,
footnote 9; official ``MLPLayer``). As with the official ``--mlp_only_train``, the head acts
only in training mode: in eval mode (``model.encode``, evaluation) it passes the raw pooled
vector through unchanged, so evaluation sees ``h`` (``cls_before_pooler``).
"""

from __future__ import annotations

import torch
from sentence_transformers.base.modules.dense import Dense
from torch import Tensor, nn


class TrainOnlyHead(Dense):
    """Linear d->d + tanh on ``sentence_embedding`` in training mode; identity in eval mode."""

    def __init__(self, in_features: int, out_features: int | None = None, init_std: float = 0.02, **kwargs):
        out_features = in_features if out_features is None else out_features
        super().__init__(in_features, out_features, activation_function=nn.Tanh(), **kwargs)
        if "init_weight" not in kwargs:
            with torch.no_grad():
                nn.init.normal_(self.linear.weight, mean=0.0, std=init_std)
                if self.linear.bias is not None:
                    nn.init.zeros_(self.linear.bias)

    def get_config_dict(self) -> dict:
        # Only what __init__ takes; the activation is always tanh.
        return {"in_features": self.in_features, "out_features": self.out_features}

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.training:
            return super().forward(features)
        return features
