"""HSimCSE's adversarial hard positive (IJCNN 2023, official code ``xubodhu/HSimCSE``), a positive part.

For anchor ``i`` (view 1 ``z_i``, view 2 ``z'_i``) the positive is

.. math::

    \\hat z = sg(a + \\epsilon \\nabla_a \\mathcal L_{adv}(a)), \\quad a = z' + u, \\quad
    \\mathcal L_{adv}(a) = \\frac1N\\sum_i -\\log \\operatorname{softmax}_j (s(a_i, z_j)/\\tau)_i,

``u`` a random unit vector per row, raw gradient, one ascent step (official ``epsilon = 3.0``), no
projection, detached. It is published as positive ``adversarial``
(:meth:`~hardcse.objectives.base.ContrastiveBatch.add_positive`); HSimCSE's quadruplet hinge
(:mod:`hardcse.objectives.parts.quadruplet`) reads its cosine ``p_i = s(z_i, \\hat z_i)``.

Difference from the official code, on purpose: the random offset comes from a generator seeded by
``(seed, step)``, so a step is reproducible and the same on every process (the official code
draws from the global RNG).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from hardcse.errors import ConfigError
from hardcse.numeric import pairwise_cosine
from hardcse.objectives.base import ContrastiveBatch, Part
from hardcse.objectives.citations import HSIMCSE_CITATION

ADV_INITS = ("unit_uniform", "unit_gaussian", "zero")


def step_seed(seed: int, step: int) -> int:
    """A well-mixed 63-bit seed for ``(seed, step)``."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(step) & 0xFFFFFFFF]).generate_state(1, np.uint64)
    return int(state[0]) >> 1


def adversarial_loss(a: Tensor, z1: Tensor, temperature: float) -> Tensor:
    """``L_adv(a) = mean_i CE(s(a_i, z_j)/tau over j, label i)`` (a: anchors, z1: candidates)."""
    logits = pairwise_cosine(a, z1) / temperature
    labels = torch.arange(a.shape[0], device=a.device)
    return F.cross_entropy(logits, labels)


class AdversarialPositive(Part):
    """``\\hat z = sg(a + epsilon * grad_a L_adv(a))``, ``a = z' + u``, published as positive ``key``.

    ``u`` is a random offset per row (``unit_uniform``: ``v / (||v|| + 1e-8)`` with ``v`` uniform
    in (-0.5, 0.5)^d, as the official ``_l2_normalize``; ``unit_gaussian``: a uniform direction on
    the sphere; ``zero``: no offset), drawn from a CPU ``torch.Generator`` seeded by
    ``(seed, step)``, so it is the same on every process and for every rerun of a step. The
    gradient is the **raw** gradient of :func:`adversarial_loss` (mean reduction, so its norm is
    at most ``2 / (N tau ||a_i||)``), taken with ``torch.autograd.grad`` on detached fp32 copies of
    ``z'`` and ``z``: the training graph is untouched and ``z`` is a constant there (autocast is
    switched off for it, so the step is fp32 under fp16 training too). ``iters`` ascent steps
    (official: 1), no projection; the result is detached.

    Diagnostics: ``adv_displacement`` (mean ``||\\hat z - a||``), ``adv_norm_offset`` (mean
    ``||\\hat z - z'||``). A batch of one sentence gets no positive.
    """

    name = "adversarial_positive"
    stage = "positive"
    title = "HSimCSE"
    citation = HSIMCSE_CITATION

    def __init__(
        self,
        step_size: float = 3.0,
        init: str = "unit_uniform",
        iters: int = 1,
        seed: int = 42,
        key: str = "adversarial",
    ) -> None:
        super().__init__()
        if init not in ADV_INITS:
            raise ConfigError(f"unknown adversarial init '{init}'; choose one of {', '.join(ADV_INITS)}.")
        if iters < 0:
            raise ConfigError(f"the adversarial positive needs 0 or more ascent steps, got {iters}.")
        self.step_size = float(step_size)
        self.init = init
        self.iters = int(iters)
        self.seed = int(seed)
        self.key = key

    def get_config_dict(self) -> dict[str, Any]:
        return {"step_size": self.step_size, "init": self.init, "iters": self.iters, "seed": self.seed, "key": self.key}

    def offset(self, shape: tuple[int, ...], step: int, device: torch.device | str = "cpu") -> Tensor:
        """The random offset ``u`` (float32) for training step ``step``."""
        if self.init == "zero":
            return torch.zeros(shape, dtype=torch.float32, device=device)
        gen = torch.Generator().manual_seed(step_seed(self.seed, step))
        if self.init == "unit_uniform":
            v = torch.rand(shape, generator=gen, dtype=torch.float32).sub_(0.5)
        else:
            v = torch.randn(shape, generator=gen, dtype=torch.float32)
        v = v / (v.norm(dim=-1, keepdim=True) + 1e-8)
        return v.to(device)

    def perturb(self, z1: Tensor, z2: Tensor, temperature: float, step: int) -> tuple[Tensor, Tensor]:
        """Return ``(\\hat z, a)`` (both detached float32, N x d) for views ``z1``, ``z2``."""
        anchors = z1.detach().float()
        start = z2.detach().float() + self.offset(tuple(z2.shape), step, z2.device)
        a = start
        # fp32 even inside mixed-precision training (autocast would run the matmul in fp16).
        with torch.enable_grad(), torch.autocast(device_type=z2.device.type, enabled=False):
            for _ in range(self.iters):
                a = a.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(adversarial_loss(a, anchors, temperature), a)
                a = a + self.step_size * grad
        return a.detach(), start

    def contribute(self, batch: ContrastiveBatch) -> None:
        if batch.size < 2:
            return
        z_hat, start = self.perturb(batch.z1, batch.z2, batch.temperature, batch.step)
        batch.add_positive(self.key, z_hat)
        with torch.no_grad():
            batch.diagnostics["adv_displacement"] = float((z_hat - start).norm(dim=-1).mean())
            batch.diagnostics["adv_norm_offset"] = float((z_hat - batch.z2.detach().float()).norm(dim=-1).mean())
