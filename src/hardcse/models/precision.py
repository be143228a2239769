"""Whether a device computes bfloat16 natively, or only emulates it (and is then much slower).

bf16 autocast pays off only where the hardware multiplies bfloat16 itself:

* x86 CPUs with AVX512-BF16 or AMX-BF16 (Cooper Lake, Sapphire Rapids and later, AMD Zen 4 and
  later); an AVX2-only CPU converts every element in software: a 1024^3 matrix product took
  2.4 s in bf16 against 0.04 s in float32 on one, and a training step tens of times
  longer than in float32;
* ARM CPUs with the BF16 extension (ARMv8.6 BF16 or SVE-BF16, e.g. Graviton 3);
* CUDA GPUs of compute capability 8.0 or higher (Ampere and later) and ROCm GPUs; older GPUs
  emulate bf16 and are slower in it than in fp16;
* Intel XPUs, as ``torch.xpu.is_bf16_supported()`` says.

The CPU answer comes from torch's own capability table (``torch.cpu.get_capabilities()``,
cpuinfo's view of the instruction sets). Where a torch build has no such table, a tiny timed
probe decides: a 256^3 matrix product in bfloat16 against float32, native when bf16 takes at most
:data:`PROBE_RATIO` times as long (about 0.2 s on an emulating CPU, once per process).

Used by ``hardcse train`` (bf16 refused where it is not native) and the benchmarks (bf16 figures
skipped there).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import torch

# Capability names of torch.cpu.get_capabilities() that mean bf16 arithmetic in hardware.
CPU_BF16_FEATURES = {
    "avx512_bf16": "AVX512-BF16",
    "amx_bf16": "AMX-BF16",
    "bf16": "ARM BF16",
    "sve_bf16": "SVE-BF16",
}
# The probe's verdict: bf16 at most this many times slower than float32 counts as native
# (emulation on AVX2 is ~50x slower; native kernels are faster than or about as fast as float32).
PROBE_RATIO = 2.0


@dataclass(frozen=True)
class Bf16Support:
    """Whether ``device`` (``cpu``, ``cuda``, ``xpu``) computes bfloat16 natively, and why, in a few words."""

    native: bool
    device: str
    detail: str


def cpu_bf16_support() -> Bf16Support:
    """The CPU's bf16 support from torch's capability table, else from a timed probe."""
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is None:
        return _probe_cpu_bf16()
    caps = get_capabilities()
    found = [name for key, name in CPU_BF16_FEATURES.items() if caps.get(key) is True]
    if found:
        return Bf16Support(True, "cpu", " and ".join(found))
    simd = torch.backends.cpu.get_cpu_capability()  # the vector kernels torch uses: AVX2, AVX512, ...
    return Bf16Support(False, "cpu", f"{caps.get('cpu_name') or 'this CPU'}, {simd}: no AVX512-BF16, AMX or ARM BF16")


def bf16_support(device: str | None = None) -> Bf16Support:
    """bf16 support of ``device``; by default the one training uses (a CUDA GPU, else an XPU, else the CPU)."""
    if device is None:
        if torch.cuda.is_available():
            device = "cuda"
        elif hasattr(torch, "xpu") and torch.xpu.is_available():
            device = "xpu"
        else:
            device = "cpu"
    if device == "cpu":
        return cpu_bf16_support()
    if device == "cuda":
        name = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
        # including_emulation=False: a GPU below compute capability 8.0 runs bf16 through
        # conversions (slower than fp16) although it accepts bf16 tensors.
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        return Bf16Support(native, "cuda", name if native else f"{name}: compute capability below 8.0")
    if device == "xpu":
        native = bool(torch.xpu.is_available() and torch.xpu.is_bf16_supported())
        return Bf16Support(native, "xpu", "torch.xpu.is_bf16_supported()")
    raise ValueError(f"unknown device '{device}' (cpu, cuda or xpu)")


def _matmul_seconds(dtype: torch.dtype, n: int = 256, repeats: int = 3) -> float:
    """Best of ``repeats`` timings of one ``n x n`` matrix product in ``dtype`` (after a warm-up)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return best


@functools.lru_cache(maxsize=1)
def _probe_cpu_bf16() -> Bf16Support:
    """Native when a bf16 matrix product takes at most :data:`PROBE_RATIO` times the float32 one.

    On one thread: with several, waking the pool (~20 ms on a busy 2-core machine) swamps a
    0.5 ms float32 product and made an emulating CPU look native.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ratio = _matmul_seconds(torch.bfloat16) / max(_matmul_seconds(torch.float32), 1e-9)
    finally:
        torch.set_num_threads(threads)
    return Bf16Support(ratio <= PROBE_RATIO, "cpu", f"timed probe: a bf16 matmul takes {ratio:.1f}x the float32 one")
