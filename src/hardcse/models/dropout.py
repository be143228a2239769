"""Dropout for CPU training whose masks cost a fifth of torch's.

SimCSE's positives are two dropout views, so an encoder step draws 19 dropout masks (BERT-base
shape: embeddings, and per layer attention probabilities, attention output, feed-forward
output). On the CPU, ``torch.bernoulli_`` draws one random number per element (~6 ns each here)
and ``scaled_dot_product_attention`` with ``dropout_p > 0`` leaves its fused kernels for the
math path (in float32 even under bf16 autocast). Together that was 15-20% of a training step of
all-MiniLM-L6-v2 at batch 64 (``benchmarks/perf.py``; BENCHMARKS.md).

Here a mask is drawn from 64-bit random words, each split into four 16-bit uniform integers
``u``; an element is kept when ``u >= round(p * 2^16)``. The drop probability is therefore
``p' = round(p * 2^16) / 2^16`` (within 7.6e-6 of ``p``) and kept values are scaled by
``1 / (1 - p')``, so ``E[dropout(x)] = x`` exactly, as with torch's dropout. Masks come from
torch's default generator, so ``torch.manual_seed`` (the trainer's seed) makes runs repeatable;
they are different draws from torch's own, so a run is not bit-identical to one made with
``fast_dropout: false`` (the same distribution, another random stream).

:func:`enable_fast_dropout` swaps a model's ``nn.Dropout`` modules for :class:`FastDropout` and,
on models using ``sdpa`` attention, the attention for :func:`dropout_attention` (registered with
transformers as ``hardcse_sdpa``), which computes attention explicitly only when it must drop
(training, on the CPU) and is transformers' SDPA otherwise. Weights and saved configs are
untouched; :func:`disable_fast_dropout` restores the stock modules.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

#: Name under which :func:`dropout_attention` is registered with transformers.
ATTENTION_NAME = "hardcse_sdpa"

_LEVELS = 1 << 16


def keep_mask(
    shape: torch.Size | tuple[int, ...], p: float, dtype: torch.dtype, device: torch.device | str = "cpu"
) -> Tensor:
    """A dropout multiplier of ``shape``: 0 with probability ``p'``, else ``1 / (1 - p')``.

    ``p' = round(p * 2^16) / 2^16``. Four 16-bit uniform integers are taken from each 64-bit
    random word (``torch.randint`` over the whole int64 range, so every 16-bit lane is uniform).
    """
    threshold = round(p * _LEVELS)
    if threshold >= _LEVELS:
        return torch.zeros(shape, dtype=dtype, device=device)
    n = math.prod(shape)
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=device)
    lanes = words.view(torch.int16)[:n]
    keep = lanes >= threshold - _LEVELS // 2  # int16 lanes are uniform on [-2^15, 2^15)
    return keep.view(shape).to(dtype).mul_(1.0 / (1.0 - threshold / _LEVELS))


class FastDropout(nn.Dropout):
    """``nn.Dropout`` drawing its CPU masks with :func:`keep_mask` (same ``p``, same scaling);
    torch's own elsewhere (GPU kernels are fused) and for in-place dropout."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.inplace or x.device.type != "cpu":
            return super().forward(x)
        return x * keep_mask(x.shape, self.p, x.dtype, x.device)


def dropout_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[Tensor, None]:
    """transformers' attention-function signature: ``softmax(q k^T * scaling + mask)``, dropped, ``@ v``.

    Used only for what it is for, bidirectional attention that drops on the CPU; every other
    call (evaluation, GPUs, causal or grouped-query attention, caches, position biases) goes to
    transformers' ``sdpa_attention_forward`` unchanged. Returns ``(batch, length, heads, dim)``.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    causal = is_causal if is_causal is not None else getattr(module, "is_causal", False)
    plain = (
        dropout > 0.0
        and query.device.type == "cpu"
        and not causal
        and getattr(module, "num_key_value_groups", 1) == 1
        and kwargs.get("position_bias") is None
        and kwargs.get("cache") is None
        and query.shape[1] == key.shape[1]
    )
    if not plain:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    scores = torch.matmul(query * scaling, key.transpose(-1, -2))
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:  # True = attend (transformers' sdpa mask)
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    # Softmax in fp32 whatever the autocast dtype, as SDPA's math path and the eager attention.
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    probs = probs * keep_mask(probs.shape, dropout, probs.dtype, probs.device)
    out = torch.matmul(probs, value)
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, dropout_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)


def _pretrained(model: nn.Module) -> list[nn.Module]:
    """The transformers models inside ``model``, outermost first (``modules()`` is pre-order)."""
    from transformers import PreTrainedModel

    return [m for m in model.modules() if isinstance(m, PreTrainedModel)]


def _swap_dropout(model: nn.Module, old: type[nn.Dropout], new: type[nn.Dropout]) -> int:
    """Replace every module of exactly type ``old`` by a ``new`` with the same settings."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is old:
                setattr(parent, name, new(child.p, inplace=child.inplace).train(child.training))
                swapped += 1
    return swapped


def _set_attention(model: nn.Module, old: str, new: str) -> None:
    # A submodel sharing its parent's config was switched with it and no longer matches ``old``.
    for pretrained in _pretrained(model):
        if getattr(pretrained.config, "_attn_implementation", None) == old:
            pretrained.set_attn_implementation(new)


def enable_fast_dropout(model: nn.Module) -> int:
    """Swap every ``nn.Dropout`` in ``model`` for :class:`FastDropout` and ``sdpa`` attention for
    :func:`dropout_attention`. Returns the number of dropout modules swapped."""
    _register()
    _set_attention(model, "sdpa", ATTENTION_NAME)
    return _swap_dropout(model, nn.Dropout, FastDropout)


def disable_fast_dropout(model: nn.Module) -> None:
    """Undo :func:`enable_fast_dropout`: stock ``nn.Dropout`` modules and ``sdpa`` attention."""
    _swap_dropout(model, FastDropout, nn.Dropout)
    _set_attention(model, ATTENTION_NAME, "sdpa")
