"""What each method did during training, from a comparison's (or a run's) training history.

For every finished run under the given directories (``*/results.json`` of a ``hardcse compare``
directory, or a run directory itself), prints one Markdown row of the diagnostics the methods log
each step:

* ClusterNS: the step where clustering started (``cluster_start_step``; "-" if it never did), the
  batch mean cosine at the first step and at the end (the trigger waits for it to fall below the
  start threshold), the false-negative pairs per batch (mean over the steps after the start), the
  mean cosine to the hard-negative centroid, and the BML term.
* HSimCSE: the share of rows whose quadruplet hinge is active (over all steps, the first and the
  last 10% of steps), and the mean cosines p (adversarial positive), m (hardest in-batch negative)
  and q (nearest corpus negative), as in the paper's equation (``quad = hinge(w1 (m-p) + w2 (q-p) + margin)``).

Usage::

    python benchmarks/method_diagnostics.py runs/compare-raw [runs/compare-cpu ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _diag(entry: dict[str, Any], name: str) -> Any:
    """Diagnostic ``name`` of a history entry: ``diagnostics/<name>``; histories written before the
    namespace hold it under the plain name (where ``bml`` and ``quad`` are the unweighted values)."""
    return entry.get(f"diagnostics/{name}", entry.get(name))


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """The diagnostics of one run's ``results.json`` (keys absent for a method not in the recipe)."""
    steps = [h for h in results.get("history", []) if "loss" in h and h.get("step", 0) > 0]
    row: dict[str, Any] = {"steps": len(steps)}
    if steps and _diag(steps[0], "cluster_started") is not None:
        started = [h for h in steps if (_diag(h, "cluster_started") or 0) >= 0.5]
        row["cluster_start_step"] = int(started[0]["step"]) if started else None
        row["batch_mean_cos_first"] = _diag(steps[0], "batch_mean_cos")
        row["batch_mean_cos_last"] = _mean([_diag(h, "batch_mean_cos") for h in steps[-10:]])
        row["false_negative_pairs"] = _mean([_diag(h, "false_negative_pairs") for h in started])
        row["hard_negative_cos"] = _mean([_diag(h, "hard_negative_cos") for h in started])
        row["bml"] = _mean([_diag(h, "bml") for h in started])
    if steps and _diag(steps[0], "hinge_active") is not None:
        tenth = max(1, len(steps) // 10)
        row["hinge_active"] = _mean([_diag(h, "hinge_active") for h in steps])
        row["hinge_active_first"] = _mean([_diag(h, "hinge_active") for h in steps[:tenth]])
        row["hinge_active_last"] = _mean([_diag(h, "hinge_active") for h in steps[-tenth:]])
        for key in ("p_mean", "m_mean", "q_mean"):
            row[key] = _mean([_diag(h, key) for h in steps])
    return row


def find_runs(roots: list[Path]) -> list[tuple[str, dict[str, Any]]]:
    runs = []
    for root in roots:
        files = [root / "results.json"] if (root / "results.json").is_file() else sorted(root.glob("*/results.json"))
        for file in files:
            results = json.loads(file.read_text(encoding="utf-8"))
            runs.append((f"{root.name}/{file.parent.name}" if file.parent != root else root.name, results))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="comparison or run directories")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    rows = [(name, summarise(results)) for name, results in find_runs(args.dirs)]
    clusterns = [(n, r) for n, r in rows if "cluster_start_step" in r]
    hsimcse = [(n, r) for n, r in rows if "hinge_active" in r]
    if clusterns:
        print(
            "| run | steps | clustering starts at | batch mean cos (first -> last) | false-neg. pairs / batch | "
            "hard-neg. cos | BML |"
        )
        print("|:--|--:|--:|--:|--:|--:|--:|")
        for name, r in clusterns:
            start = "-" if r["cluster_start_step"] is None else str(r["cluster_start_step"])
            print(
                f"| {name} | {r['steps']} | {start} | {_fmt(r['batch_mean_cos_first'])} -> "
                f"{_fmt(r['batch_mean_cos_last'])} | {_fmt(r['false_negative_pairs'], 1)} | "
                f"{_fmt(r['hard_negative_cos'])} | {_fmt(r['bml'], 4)} |"
            )
        print()
    if hsimcse:
        print("| run | steps | hinge active (all / first 10% / last 10%) | p | m | q |")
        print("|:--|--:|--:|--:|--:|--:|")
        for name, r in hsimcse:
            print(
                f"| {name} | {r['steps']} | {_fmt(r['hinge_active'])} / {_fmt(r['hinge_active_first'])} / "
                f"{_fmt(r['hinge_active_last'])} | {_fmt(r['p_mean'])} | {_fmt(r['m_mean'])} | "
                f"{_fmt(r['q_mean'])} |"
            )
    if args.json:
        args.json.write_text(json.dumps(dict(rows), indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
