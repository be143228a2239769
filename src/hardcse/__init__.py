"""hardcse: unsupervised contrastive sentence embeddings with hard positives and negatives.

Python API::

    import hardcse
    results = hardcse.train(recipe="clusterns", steps=250, output="runs/clusterns")
    scores = hardcse.evaluate("runs/clusterns/model")
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["HardCSELoss", "TrainConfig", "compare", "evaluate", "train", "__version__"]


def __getattr__(name: str):
    # Lazy: `import hardcse` stays fast and torch-free until something is used.
    if name in ("train", "evaluate", "compare", "make_config"):
        from hardcse import api

        return getattr(api, name)
    if name == "TrainConfig":
        from hardcse.training.config import TrainConfig

        return TrainConfig
    if name == "HardCSELoss":
        from hardcse.objectives.base import HardCSELoss

        return HardCSELoss
    raise AttributeError(name)
