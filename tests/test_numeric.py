"""The shared numeric helpers (``hardcse.numeric``) and process-group facts (``hardcse.process_group``):
the same numbers as the per-module copies they replaced, and one answer for "is this NaN/finite"."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hardcse import process_group
from hardcse.numeric import is_finite_number, is_nan, is_nonfinite, nan_to_none, normalize_rows, pairwise_cosine


def _rows(n: int, d: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * torch.logspace(-10, 2, n).unsqueeze(1)
    x[1] = 0.0  # a zero row: its norm is clamped, its cosines are 0
    return x.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_normalize_rows_is_torch_normalize_bit_for_bit(dtype):
    # The corpus bank used F.normalize(emb, p=2, dim=1); normalize_rows(eps=1e-12) must not move a bit.
    a = _rows(33, 16, 0, dtype).requires_grad_()
    b = a.detach().clone().requires_grad_()
    ya, yb = F.normalize(a, p=2, dim=1), normalize_rows(b, eps=1e-12)
    weights = torch.randn(ya.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    (ya * weights).sum().backward()
    (yb * weights).sum().backward()
    assert torch.equal(ya, yb) and torch.equal(a.grad, b.grad)


def test_pairwise_cosine_is_the_clamped_norm_formula():
    # The formula of the former copies (objectives.base.pairwise_cosine, cluster.kmeans._cosine).
    a, b = _rows(9, 8, 2), _rows(7, 8, 3)
    eps = 1e-8
    old = (a / a.norm(dim=-1, keepdim=True).clamp_min(eps)) @ (b / b.norm(dim=-1, keepdim=True).clamp_min(eps)).T
    assert torch.equal(pairwise_cosine(a, b), old)
    assert pairwise_cosine(a, b).shape == (9, 7)
    assert torch.all(pairwise_cosine(a, b)[1] == 0)
    # Away from tiny norms it is torch's cosine_similarity, pair by pair.
    x, y = torch.randn(5, 8), torch.randn(6, 8)
    expected = F.cosine_similarity(x.unsqueeze(1), y.unsqueeze(0), dim=-1)
    torch.testing.assert_close(pairwise_cosine(x, y), expected)
    exact = torch.tensor([[3.0, 4.0]]), torch.tensor([[4.0, 3.0]])
    assert abs(float(pairwise_cosine(*exact)) - 24 / 25) < 1e-7


def test_nan_and_finite_predicates():
    assert is_nan(math.nan) and is_nan(np.float64("nan"))
    assert not any(is_nan(v) for v in (None, 0, 1.5, math.inf, "nan"))
    assert nan_to_none(math.nan) is None and nan_to_none(2.5) == 2.5 and nan_to_none("x") == "x"
    assert nan_to_none(None) is None and nan_to_none(math.inf) == math.inf
    assert all(is_finite_number(v) for v in (0, -3, 1.5, np.float64(2.0)))
    assert not any(is_finite_number(v) for v in (None, True, "1", math.nan, math.inf, -math.inf))
    assert all(is_nonfinite(v) for v in (math.nan, math.inf, -math.inf))
    assert not any(is_nonfinite(v) for v in (None, 0, 10**400, 1.5, "inf"))


def test_process_group_without_a_group_is_rank_0_of_1():
    assert not torch.distributed.is_initialized()
    assert not process_group.is_initialized()
    assert (process_group.rank(), process_group.world_size()) == (0, 1)
    assert process_group.rank_and_size() == (0, 1) and process_group.is_main_process()
    process_group.barrier()  # a no-op in one process


def test_process_group_in_a_one_process_gloo_group(tmp_path):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert process_group.is_initialized()
        assert process_group.rank_and_size() == (0, 1) and process_group.is_main_process()
        process_group.barrier()
    finally:
        torch.distributed.destroy_process_group()
    assert not process_group.is_initialized()


def test_launched_world_size_reads_the_launcher_before_the_group_exists(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert process_group.launched_world_size() == 1
    monkeypatch.setenv("WORLD_SIZE", "")
    assert process_group.launched_world_size() == 1
    monkeypatch.setenv("WORLD_SIZE", "4")  # torchrun --nproc_per_node 4, before the trainer's group
    assert process_group.launched_world_size() == 4
    assert process_group.world_size() == 1  # the group's own count: no group yet
