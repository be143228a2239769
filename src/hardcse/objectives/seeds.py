"""The seed a method's randomness uses (cluster initialisation, adversarial offsets, bank sample).

A method's ``seed`` setting wins when set; otherwise the run's ``--seed``; otherwise 42, the seed
of the official ClusterNS and HSimCSE scripts. Every random draw of a method is a function of this
seed (and the step), so a resumed run draws the same values again without saved RNG state.
"""

from __future__ import annotations

#: The seed when neither the method nor the run names one (the official scripts').
DEFAULT_SEED = 42


def method_seed(seed: int | None, run_seed: int | None = None) -> int:
    """``seed`` when set, else ``run_seed``, else :data:`DEFAULT_SEED`."""
    if seed is not None:
        return int(seed)
    return int(run_seed) if run_seed is not None else DEFAULT_SEED
