"""Native bfloat16 detection (an AVX2-only CPU emulates it, ~50x slower) and the bf16 decision of
``hardcse train``, with torch's capability checks mocked both ways, so every case runs the same on
any CPU or GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import assert_one_sentence_error, run_cli, write_all, write_corpus

import hardcse
from hardcse.errors import ConfigError
from hardcse.models import precision
from hardcse.models.precision import Bf16Support, bf16_support, cpu_bf16_support
from hardcse.training import run

AVX2_ONLY = {"architecture": "x86_64", "cpu_name": "Test CPU", "avx2": True, "fma3": True, "avx512_bf16": False}


def mock_cpu(monkeypatch, **features: bool) -> None:
    """torch.cpu.get_capabilities() of an AVX2-only x86 CPU plus ``features``; no GPU in sight."""
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {**AVX2_ONLY, **features})
    monkeypatch.setattr(run, "_accelerator", lambda: False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


@pytest.mark.parametrize(
    ("features", "native", "named"),
    [
        ({}, False, "no AVX512-BF16, AMX or ARM BF16"),
        ({"avx512_bf16": True}, True, "AVX512-BF16"),
        ({"amx_bf16": True, "amx_tile": True}, True, "AMX-BF16"),
        ({"bf16": True}, True, "ARM BF16"),
        ({"sve_bf16": True}, True, "SVE-BF16"),
        ({"avx512_f": True, "avx512_bw": True}, False, "no AVX512-BF16"),  # AVX-512 alone emulates bf16
    ],
)
def test_cpu_support_from_torch_capabilities(monkeypatch, features, native, named):
    mock_cpu(monkeypatch, **features)
    support = cpu_bf16_support()
    assert support.native is native and support.device == "cpu"
    assert named in support.detail


def test_probe_decides_without_a_capability_table(monkeypatch):
    monkeypatch.delattr(torch.cpu, "get_capabilities")
    seconds = {torch.float32: 0.001}
    monkeypatch.setattr(precision, "_matmul_seconds", lambda dtype: seconds[dtype])
    threads = torch.get_num_threads()
    try:
        seconds[torch.bfloat16] = 0.05  # emulated: 50x
        precision._probe_cpu_bf16.cache_clear()
        slow = cpu_bf16_support()
        seconds[torch.bfloat16] = 0.0008  # native kernels: faster than float32
        precision._probe_cpu_bf16.cache_clear()
        fast = cpu_bf16_support()
    finally:
        precision._probe_cpu_bf16.cache_clear()
    assert not slow.native and "50.0x" in slow.detail
    assert fast.native
    assert torch.get_num_threads() == threads  # the probe's single thread is given back


def test_real_probe_runs_quickly_and_answers():
    precision._probe_cpu_bf16.cache_clear()
    try:
        support = precision._probe_cpu_bf16()
    finally:
        precision._probe_cpu_bf16.cache_clear()
    assert isinstance(support.native, bool) and "timed probe" in support.detail


def test_gpu_support_excludes_emulation(monkeypatch):
    asked = {}

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        asked["including_emulation"] = including_emulation
        return including_emulation  # a pre-Ampere GPU: accepts bf16, computes it by conversion

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    support = bf16_support()
    assert support == Bf16Support(False, "cuda", "Tesla T4: compute capability below 8.0")
    assert asked == {"including_emulation": False}


def _config(**kw) -> hardcse.TrainConfig:
    return hardcse.make_config(preset="cpu", recipe="simcse", **kw)


def test_bf16_refused_on_a_cpu_without_native_bf16(monkeypatch):
    mock_cpu(monkeypatch)
    with pytest.raises(ConfigError) as err:
        run._use_cpu(_config(bf16=True))
    sentence = str(err.value)
    assert "\n" not in sentence and sentence.endswith(".") and sentence.count("; ") == 1
    assert "Test CPU" in sentence and "--set bf16=false" in sentence


def test_bf16_accepted_where_native(monkeypatch):
    mock_cpu(monkeypatch, avx512_bf16=True)
    assert run._use_cpu(_config(bf16=True)) is True  # bf16 autocast on the CPU: the trainer is told so


def test_fp32_never_consults_the_check(monkeypatch):
    mock_cpu(monkeypatch)

    def fail(*args):
        raise AssertionError("bf16 support checked for an fp32 run")

    monkeypatch.setattr(run, "bf16_support", fail)
    assert run._use_cpu(_config()) is False


def test_bf16_refused_on_a_gpu_without_native_bf16(monkeypatch):
    monkeypatch.setattr(run, "_accelerator", lambda: True)
    monkeypatch.setattr(run, "bf16_support", lambda device: Bf16Support(False, "cuda", "Tesla T4: capability 7.5"))
    with pytest.raises(ConfigError, match=r"this GPU has none \(Tesla T4.*use --fp16 instead"):
        run._use_cpu(_config(bf16=True))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bf16-cli")
    write_all(root / "data", pairs=6)
    write_corpus(root / "corpus.txt")
    return {"corpus": root / "corpus.txt", "data": root / "data"}


@pytest.mark.parametrize("native", [False, True])
def test_cli_decides_before_anything_loads(native, inputs, tmp_path, monkeypatch, capsys):
    # The model does not exist: a refusal that names bf16 proves it came before the model loaded,
    # and a native CPU gets past the check to the missing model instead.
    mock_cpu(monkeypatch, avx512_bf16=native)
    out = tmp_path / "run"
    args = ["train", "--model", str(tmp_path / "no-such-model"), "--corpus", str(inputs["corpus"])]
    args += ["--data-dir", str(inputs["data"]), "--output", str(out), "--quiet", "--set", "bf16=true"]
    code, _, err = run_cli(args, monkeypatch, capsys)
    if native:
        assert_one_sentence_error(code, err, "no-such-model")
        assert "bf16" not in err
    else:
        assert code == 2
        assert_one_sentence_error(code, err, "bf16 needs native bfloat16", "Test CPU", "--set bf16=false")
    assert not out.exists()
