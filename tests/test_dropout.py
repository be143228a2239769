"""Fast CPU dropout: the mask's distribution, the modules it swaps and the attention it replaces."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hardcse.models import dropout as fd


def test_keep_mask_values_rate_and_every_lane():
    torch.manual_seed(0)
    n = 400_000
    mask = fd.keep_mask((n,), 0.1, torch.float32)
    p_eff = round(0.1 * 65536) / 65536
    scale = 1 / (1 - p_eff)
    assert mask.unique().tolist() == [0.0, pytest.approx(scale)]
    kept = (mask > 0).double()
    sigma = math.sqrt(p_eff * (1 - p_eff) / n)
    assert abs(1 - kept.mean().item() - p_eff) < 5 * sigma
    # Each of the four 16-bit lanes of a 64-bit word is uniform (a biased top lane would show here).
    for lane in range(4):
        rate = 1 - kept[lane::4].mean().item()
        assert abs(rate - p_eff) < 5 * 2 * sigma, (lane, rate)
    # E[mask] = 1: dropout keeps the expectation, as torch's does.
    assert abs(mask.double().mean().item() - 1) < 5 * sigma * scale


def test_keep_mask_is_seeded_and_shaped():
    torch.manual_seed(3)
    a = fd.keep_mask((5, 7, 3), 0.25, torch.bfloat16)
    torch.manual_seed(3)
    b = fd.keep_mask((5, 7, 3), 0.25, torch.bfloat16)
    assert a.shape == (5, 7, 3) and a.dtype == torch.bfloat16
    assert torch.equal(a, b)
    assert torch.count_nonzero(fd.keep_mask((64,), 1.0, torch.float32)) == 0
    assert torch.all(fd.keep_mask((64,), 0.0, torch.float32) == 1)


def test_fast_dropout_module_forward_and_gradient():
    layer = fd.FastDropout(0.5)
    x = torch.randn(200, 30, requires_grad=True)
    torch.manual_seed(1)
    y = layer(x)
    torch.manual_seed(1)
    mask = fd.keep_mask(x.shape, 0.5, x.dtype)
    assert torch.equal(y, x * mask)
    y.sum().backward()
    assert torch.equal(x.grad, mask)  # d(x * m)/dx = m
    layer.eval()
    assert layer(x) is x


def test_enable_swaps_modules_and_attention_and_disable_restores(tmp_path):
    from helpers import make_tiny_training_model

    model = make_tiny_training_model(tmp_path / "bert")
    backbone = model[0].auto_model
    stock = sum(type(m) is nn.Dropout for m in model.modules())
    assert stock > 0 and backbone.config._attn_implementation == "sdpa"
    assert fd.enable_fast_dropout(model) == stock
    assert not any(type(m) is nn.Dropout for m in model.modules())
    assert all(m.training for m in model.modules() if isinstance(m, fd.FastDropout))
    assert backbone.config._attn_implementation == fd.ATTENTION_NAME
    fd.disable_fast_dropout(model)
    assert sum(type(m) is nn.Dropout for m in model.modules()) == stock
    assert backbone.config._attn_implementation == "sdpa"


def test_training_path_with_every_unit_kept_is_the_eval_function(tmp_path, monkeypatch):
    """With the masks forced to 1, the train-mode forward (explicit attention, FastDropout
    everywhere) must compute what the stock model computes in eval mode, padding included."""
    from helpers import make_tiny_training_model

    model = make_tiny_training_model(tmp_path / "bert")
    features = model.preprocess(["a", "the cat sits on the house", "a dog runs on the old river"])
    assert (features["attention_mask"] == 0).any()
    backbone = model[0].auto_model  # the train-only head is not part of what is compared
    inputs = {"input_ids": features["input_ids"], "attention_mask": features["attention_mask"]}
    model.eval()
    with torch.no_grad():
        reference = backbone(**inputs).last_hidden_state
    calls = []

    def ones(shape, p, dtype, device="cpu"):
        calls.append(tuple(shape))
        return torch.ones(shape, dtype=dtype, device=device)

    fd.enable_fast_dropout(model)
    monkeypatch.setattr(fd, "keep_mask", ones)
    model.train()
    with torch.no_grad():
        trained_path = backbone(**inputs).last_hidden_state
    assert any(len(s) == 4 for s in calls), "the attention probabilities were not dropped by dropout_attention"
    assert torch.allclose(trained_path, reference, atol=1e-5)
    # ... and with the real masks it is a different (dropped) function.
    monkeypatch.undo()
    with torch.no_grad():
        assert not torch.allclose(backbone(**inputs).last_hidden_state, reference, atol=1e-3)


def test_dropout_attention_hands_everything_else_to_sdpa():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 5, 4) for _ in range(3))
    mask = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    mask[1, :, :, 3:] = False
    module = nn.Module()
    module.is_causal = False
    out, _ = fd.dropout_attention(module, q, k, v, mask, dropout=0.0, scaling=0.5)
    ref, _ = sdpa_attention_forward(module, q, k, v, mask, dropout=0.0, scaling=0.5)
    assert torch.equal(out, ref)
    # Dropping: the same result with every unit kept, float (additive) masks too.
    additive = torch.zeros(2, 1, 5, 5).masked_fill(~mask, torch.finfo(torch.float32).min)
    for m in (mask, additive):
        torch.manual_seed(2)
        dropped, _ = fd.dropout_attention(module, q, k, v, m, dropout=1e-9, scaling=0.5)
        assert torch.allclose(dropped, ref, atol=1e-6)


def test_export_after_disable_is_a_plain_model(tmp_path):
    """What run.py does before exporting: the saved model loads as usual, with stock attention."""
    from helpers import make_tiny_bert
    from sentence_transformers import SentenceTransformer

    from hardcse.models.encoder import export_model
    from hardcse.models.representation import Pooled

    path = make_tiny_bert(tmp_path / "bert")
    model = Pooled().build(str(path))
    fd.enable_fast_dropout(model)
    fd.disable_fast_dropout(model)
    export_model(model, tmp_path / "out")
    loaded = SentenceTransformer(str(tmp_path / "out"))
    assert loaded[0].auto_model.config._attn_implementation == "sdpa"
    assert not any(isinstance(m, fd.FastDropout) for m in loaded.modules())
