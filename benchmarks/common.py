"""Shared helpers for the benchmark scripts (not part of the package)."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from hardcse.models.precision import cpu_bf16_support

ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    env = os.environ.get("HARDCSE_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def cpu_model_name() -> str:
    """The CPU's model name as ``lscpu`` shows it (``/proc/cpuinfo``), else what Python or torch knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    return platform.processor() or str(caps.get("cpu_name") or "unknown CPU")


def cpu_description() -> str:
    """One line recording the machine a table was measured on: CPU model, torch's vector kernels,
    the bfloat16 instruction sets (AVX512-BF16, AMX-BF16) and whether bf16 is native here."""
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    keys = ("avx2", "avx512_f", "avx512_bf16", "amx_bf16")
    flags = ", ".join(f"{key} {'yes' if caps.get(key) else 'no'}" for key in keys)
    support = cpu_bf16_support()
    native = "native" if support.native else "not native"
    return (
        f"cpu: {cpu_model_name()}, {os.cpu_count()} logical cores, torch kernels "
        f"{torch.backends.cpu.get_cpu_capability()}; {flags}; bf16 {native} ({support.detail})"
    )


class StepTimer(TrainerCallback):
    """Wall time of every optimisation step (forward, backward, optimiser), evaluation excluded."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._t0 = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._t0)

    def median(self, skip: int = 3) -> float:
        # The first steps pay one-off costs (allocator warm-up, lazy imports).
        values = self.times[skip:] if len(self.times) > skip + 2 else self.times
        return statistics.median(values)


def table_row(name: str, result: dict) -> str:
    order = ["STS12", "STS13", "STS14", "STS15", "STS16", "STSBenchmark", "SICKRelatedness"]
    cells = [f"{result['tasks'][t]['spearman']:.2f}" for t in order if t in result["tasks"]]
    return f"| {name} | " + " | ".join(cells) + f" | {result['avg']:.2f} |"


TABLE_HEAD = (
    "| run | STS12 | STS13 | STS14 | STS15 | STS16 | STS-B | SICK-R | Avg |\n|---|---|---|---|---|---|---|---|---|"
)
