"""Shared helpers for the benchmark scripts (not part of the package)."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    env = os.environ.get("HARDCSE_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


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
