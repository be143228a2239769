"""oneDNN fused linear layers for CPU inference: values, fallbacks, and the module switch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hardcse.models import fused_linear as fl

needs_onednn = pytest.mark.skipif(not fl.fused_kernels_available(), reason="no usable oneDNN linear in this torch")


def _linear(cls: type[nn.Linear]) -> nn.Linear:
    layer = nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, -4.0]]))
        layer.bias.copy_(torch.tensor([0.5, -1.0]))
    layer.__class__ = cls
    return layer


@needs_onednn
def test_hand_worked_values():
    # x = (1, 1): W x + b = (1 + 2 + 0.5, 3 - 4 - 1) = (3.5, -2).
    x = torch.ones(1, 2)

    def gelu(v: float) -> float:  # v * Phi(v)
        return v * 0.5 * (1 + math.erf(v / math.sqrt(2)))

    def gelu_tanh(v: float) -> float:
        return 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))

    with torch.inference_mode():
        assert fl.FusedLinear.forward(_linear(fl.FusedLinear), x).tolist() == [[3.5, -2.0]]
        erf = _linear(fl.FusedGeluLinear)(x)[0].tolist()
        tanh = _linear(fl.FusedTanhGeluLinear)(x)[0].tolist()
    assert erf == pytest.approx([gelu(3.5), gelu(-2.0)], abs=1e-6)  # 3.49919, -0.04550
    assert tanh == pytest.approx([gelu_tanh(3.5), gelu_tanh(-2.0)], abs=1e-6)
    assert erf[1] != pytest.approx(tanh[1], abs=1e-5)  # the two approximations are really different


@needs_onednn
@pytest.mark.parametrize(
    ("cls", "reference"),
    [
        (fl.FusedLinear, lambda y: y),
        (fl.FusedGeluLinear, F.gelu),
        (fl.FusedTanhGeluLinear, lambda y: F.gelu(y, approximate="tanh")),
    ],
)
def test_matches_torch_on_batches_of_sequences(cls, reference):
    torch.manual_seed(0)
    layer = nn.Linear(48, 96)
    x = torch.randn(5, 7, 48)
    expected = reference(F.linear(x, layer.weight, layer.bias))
    layer.__class__ = cls
    with torch.inference_mode():
        got = layer(x)
        # A non-contiguous input (a transposed view) is handled too.
        strided = layer(x.transpose(0, 1))
    assert got.shape == (5, 7, 96)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(strided, expected.transpose(0, 1), rtol=1e-5, atol=1e-5)


def test_autograd_and_other_dtypes_take_torch_path(monkeypatch):
    torch.manual_seed(0)
    layer = nn.Linear(8, 4)
    layer.__class__ = fl.FusedGeluLinear

    def refuse(*args, **kwargs):
        raise AssertionError("the oneDNN kernel ran outside float32 CPU inference")

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", refuse, raising=False)
    x = torch.randn(3, 8, requires_grad=True)
    out = layer(x)  # grad mode: torch's kernels, differentiable
    out.sum().backward()
    assert x.grad is not None and layer.weight.grad is not None
    torch.testing.assert_close(out, F.gelu(F.linear(x, layer.weight, layer.bias)))
    with torch.inference_mode():
        layer.to(torch.bfloat16)
        assert layer(x.detach().bfloat16()).dtype == torch.bfloat16
        assert layer(torch.empty(0, 8, dtype=torch.bfloat16)).shape == (0, 4)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from helpers import make_tiny_bert
    from sentence_transformers import SentenceTransformer

    path = make_tiny_bert(tmp_path_factory.mktemp("tiny"))
    return SentenceTransformer(str(path), device="cpu")


@needs_onednn
def test_switch_fuses_feed_forward_gelu_and_restores(tiny_bert):
    model = tiny_bert.eval()
    before = {name: type(m) for name, m in model.named_modules()}
    activations = [m.intermediate_act_fn for m in model.modules() if hasattr(m, "intermediate_act_fn")]
    assert len(activations) == 2
    sentences = ["the dog runs in the city .", "a cat sits", "music"]
    with torch.inference_mode():
        stock = model.encode(sentences, convert_to_tensor=True)
        with fl.fused_cpu_inference(model) as switched:
            assert switched
            kinds = {name: type(m) for name, m in model.named_modules() if isinstance(m, nn.Linear)}
            fused = model.encode(sentences, convert_to_tensor=True)
            inside = [m.intermediate_act_fn for m in model.modules() if hasattr(m, "intermediate_act_fn")]
            assert len(inside) == 2 and all(isinstance(a, nn.Identity) for a in inside)
    # Feed-forward layers carry the GELU; every other linear layer (Q, K, V, outputs, pooler) its bias.
    assert {n for n, k in kinds.items() if k is fl.FusedGeluLinear} == {
        f"0.model.encoder.layer.{i}.intermediate.dense" for i in range(2)
    }
    assert all(k in (fl.FusedLinear, fl.FusedGeluLinear) for k in kinds.values())
    torch.testing.assert_close(fused, stock, rtol=1e-5, atol=1e-6)
    assert {name: type(m) for name, m in model.named_modules()} == before
    assert [m.intermediate_act_fn for m in model.modules() if hasattr(m, "intermediate_act_fn")] == activations


def test_switch_leaves_other_models_alone(tiny_bert):
    with fl.fused_cpu_inference(tiny_bert, enabled=False) as switched:
        assert not switched and not any(isinstance(m, fl.FusedLinear) for m in tiny_bert.modules())
    half = nn.Sequential(nn.Linear(4, 4)).to(torch.bfloat16)
    with fl.fused_cpu_inference(half) as switched:
        assert not switched and type(half[0]) is nn.Linear


@needs_onednn
def test_switch_restores_after_an_error(tiny_bert):
    with pytest.raises(RuntimeError, match="boom"), fl.fused_cpu_inference(tiny_bert):
        raise RuntimeError("boom")
    assert not any(isinstance(m, fl.FusedLinear) for m in tiny_bert.modules())
    assert not any(isinstance(m, nn.Identity) for m in tiny_bert.modules())
