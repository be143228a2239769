"""Small numeric helpers shared by every layer: row normalisation, pairwise cosine, NaN checks.

Torch functions here use only tensor methods, so this module imports no torch itself. The STS
scoring of :mod:`hardcse.evaluation.scoring` keeps its own NumPy cosine (``cosine_rows``): it is
row-wise in float64 with SentEval's rule that NaN entries and undefined cosines count as 0, which
the clamped-norm cosine below does not reproduce for near-zero vectors.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from torch import Tensor

T = TypeVar("T")

#: ``eps`` of :func:`pairwise_cosine`: the default of ``torch.nn.functional.cosine_similarity``.
COSINE_EPS = 1e-8


def normalize_rows(x: Tensor, eps: float) -> Tensor:
    """``x_i / max(||x_i||_2, eps)`` along the last dimension.

    The same operations as ``torch.nn.functional.normalize(x, p=2, dim=-1, eps=eps)`` (whose default
    ``eps`` is 1e-12), hence the same values bit for bit and the same gradient.
    """
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


def pairwise_cosine(a: Tensor, b: Tensor, eps: float = COSINE_EPS) -> Tensor:
    """``cos(a_i, b_j) = a_i . b_j / (max(||a_i||, eps) max(||b_j||, eps))`` for all ``i, j`` (n x m).

    Each norm is clamped at ``eps`` separately, as in ``torch.nn.functional.cosine_similarity``; the
    contrastive frame, ClusterNS's centroids and HSimCSE's positives all score with this one function.
    """
    return normalize_rows(a, eps) @ normalize_rows(b, eps).T


def is_nan(value: object) -> bool:
    """True for a float NaN (``None``, ints and non-numbers are not NaN)."""
    return isinstance(value, float) and math.isnan(value)


def nan_to_none(value: T) -> T | None:
    """``None`` for a float NaN (a missing number, ``null`` in JSON), else ``value`` unchanged."""
    return None if is_nan(value) else value


def is_finite_number(value: object) -> bool:
    """True for an int or float that is neither NaN nor infinite (False for ``None``, bools, strings)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_nonfinite(value: object) -> bool:
    """True for a float that is NaN or infinite, a number that went wrong (``None``, ints are not)."""
    return isinstance(value, float) and not math.isfinite(value)
