"""oneDNN linear layers for CPU inference: bias and GELU inside the matrix product.

On the CPU, ``nn.Linear`` in float32 is ``aten::addmm`` on MKL, which first copies the bias into
every output row and then multiplies, and a transformer's feed-forward GELU is one more pass over
a 4x-wide activation. Profiling hardcse's STS evaluation of all-MiniLM-L6-v2 (torch profiler,
BENCHMARKS.md) gave addmm 80% of the time, its bias copies 4% and GELU 5%. oneDNN's linear
primitive (``torch.ops.mkldnn._linear_pointwise``, the kernel inductor uses for frozen CPU
graphs) applies the bias and the activation while it writes the product; on the CPU measured it
also multiplies faster than MKL at these shapes. Results agree with ``F.gelu(F.linear(x, W, b))``
to float32 rounding (a different summation order, ~1e-6), not bit for bit.

:func:`fused_cpu_inference` switches a model's linear layers to :class:`FusedLinear` for the
duration of a ``with`` block: the BERT-style feed-forward (a module with ``dense`` and an exact
or tanh GELU ``intermediate_act_fn``) gets its GELU fused, every other ``nn.Linear`` its bias.
The fused kernel runs only without autograd, on float32 CPU tensors; anything else (training,
GPUs, bf16) takes ``nn.Linear``'s own path, so switching is always safe. If this torch build has
no oneDNN, or the kernel disagrees with torch's on a probe, the block changes nothing.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)


class FusedLinear(nn.Linear):
    """``nn.Linear`` whose inference on float32 CPU tensors is one oneDNN call (bias fused).

    ``activation`` (a class attribute of the subclasses) is also fused: ``"gelu"`` with
    ``approximation`` ``"none"`` (erf, ``F.gelu``) or ``"tanh"`` (``F.gelu(approximate="tanh")``).
    """

    activation = "none"
    approximation = ""

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() or not x.is_cpu or x.dtype != torch.float32 or x.numel() == 0:
            return self._reference(x)
        if self.weight.dtype != torch.float32 or not self.weight.is_cpu:
            return self._reference(x)
        flat = x.reshape(-1, x.shape[-1])
        out = torch.ops.mkldnn._linear_pointwise(flat, self.weight, self.bias, self.activation, [], self.approximation)
        return out.view(*x.shape[:-1], out.shape[-1])

    def _reference(self, x: Tensor) -> Tensor:
        """The same function with torch's own kernels."""
        out = F.linear(x, self.weight, self.bias)
        if self.activation == "gelu":
            out = F.gelu(out, approximate="tanh" if self.approximation == "tanh" else "none")
        return out


class FusedGeluLinear(FusedLinear):
    """:class:`FusedLinear` followed by the exact (erf) GELU, in the same kernel."""

    activation = "gelu"
    approximation = "none"


class FusedTanhGeluLinear(FusedLinear):
    """:class:`FusedLinear` followed by the tanh-approximated GELU, in the same kernel."""

    activation = "gelu"
    approximation = "tanh"


@functools.cache
def fused_kernels_available() -> bool:
    """Whether this torch build's oneDNN linear runs here and agrees with torch's kernels on a probe."""
    op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return False
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(37, 48, generator=generator)
    weight = torch.randn(96, 48, generator=generator) / 7
    bias = torch.randn(96, generator=generator)
    try:
        with torch.inference_mode():
            checks = [
                (op(x, weight, bias, "none", [], ""), F.linear(x, weight, bias)),
                (op(x, weight, bias, "gelu", [], "none"), F.gelu(F.linear(x, weight, bias))),
                (op(x, weight, bias, "gelu", [], "tanh"), F.gelu(F.linear(x, weight, bias), approximate="tanh")),
                (op(x, weight, None, "none", [], ""), F.linear(x, weight)),
            ]
    except Exception:  # an op that exists but cannot run on this CPU
        logger.debug("oneDNN linear is not usable here", exc_info=True)
        return False
    return all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in checks)


def _gelu_kind(activation: object) -> type[FusedLinear] | None:
    """The fused class for a transformers GELU module (``act`` is ``F.gelu``, exact or tanh), else ``None``."""
    fn = getattr(activation, "act", None)
    if fn is F.gelu:
        return FusedGeluLinear
    if isinstance(fn, functools.partial) and fn.func is F.gelu and not fn.args:
        if fn.keywords == {"approximate": "tanh"}:
            return FusedTanhGeluLinear
        if fn.keywords in ({}, {"approximate": "none"}):
            return FusedGeluLinear
    return None


def _fusable(model: nn.Module) -> bool:
    params = list(model.parameters())
    return bool(params) and all(p.is_cpu and p.dtype == torch.float32 for p in params)


@contextmanager
def fused_cpu_inference(model: nn.Module, enabled: bool = True) -> Iterator[bool]:
    """Within the block, ``model``'s linear layers run on oneDNN with bias (and GELU) fused.

    Yields whether anything was switched: nothing is when ``enabled`` is false, the model is not
    entirely float32 on the CPU, or :func:`fused_kernels_available` is false. The model's
    modules, classes and activations are exactly restored on exit; weights are never copied.
    """
    if not enabled or not _fusable(model) or not fused_kernels_available():
        yield False
        return
    switched: list[nn.Linear] = []
    activations: dict[nn.Module, nn.Module] = {}
    try:
        # modules() is pre-order: a feed-forward block comes before its ``dense`` layer, which is
        # then already a fused GELU class and not switched a second time.
        for module in model.modules():
            activation = getattr(module, "intermediate_act_fn", None)
            kind = _gelu_kind(activation)
            dense = getattr(module, "dense", None)
            if type(dense) is nn.Linear and isinstance(activation, nn.Module) and kind is not None:
                switched.append(dense)
                dense.__class__ = kind
                activations[module] = activation
                module.intermediate_act_fn = nn.Identity()
            elif type(module) is nn.Linear:
                switched.append(module)
                module.__class__ = FusedLinear
        yield True
    finally:
        for module in switched:
            module.__class__ = nn.Linear
        for module, activation in activations.items():
            module.intermediate_act_fn = activation
