"""Per-pair STS predictions (gold score, cosine) saved to and read from ``.npz`` files."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np


def save_predictions(path: str | Path, predictions: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]]) -> None:
    """Write ``{task: {subset: (gold, cosine)}}`` atomically as an ``.npz`` (keys ``task/subset/gold|cosine``)."""
    import io

    from hardcse.io import atomic_write_bytes

    arrays = {}
    for task, subsets in predictions.items():
        for subset, (gold, cosine) in subsets.items():
            arrays[f"{task}/{subset}/gold"] = np.asarray(gold, dtype=np.float64)
            arrays[f"{task}/{subset}/cosine"] = np.asarray(cosine, dtype=np.float64)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def load_predictions(path: str | Path) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Read what :func:`save_predictions` wrote, in the order it was written."""
    predictions: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    with np.load(path, allow_pickle=False) as npz:
        for key in npz.files:
            task, subset, kind = key.rsplit("/", 2)
            if kind == "gold":
                predictions.setdefault(task, {})[subset] = (npz[key], npz[f"{task}/{subset}/cosine"])
    return predictions
