"""Several recipes x seeds on the `cpu` preset: seven-task scores (mean +- std), STS-B dev curves
and step times, written as Markdown and a plot.

Runs are kept in OUT/<recipe>-s<seed>/ and skipped when finished, so the script can be stopped
and restarted. With --workers 2 two runs go side by side, one torch thread each (on 2 cores this
has more throughput than one 2-thread run; step times are then only comparable within the run).

    .venv/bin/python benchmarks/compare_methods.py --recipes simcse,clusterns --seeds 42,43,44 \
        --steps 250 --workers 2 --out benchmarks/out/compare
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import StepTimer, data_dir  # noqa: E402

ORDER = ["STS12", "STS13", "STS14", "STS15", "STS16", "STSBenchmark", "SICKRelatedness"]


def _variant(spec: str) -> tuple[str, str, dict]:
    """'hsimcse:refresh' -> (name, recipe, overrides)."""
    name = spec
    recipe, _, mode = spec.partition(":")
    overrides: dict = {}
    if recipe == "hsimcse" and mode:
        overrides["hsimcse"] = {"index_mode": mode}
    elif recipe == "clusterns" and mode:
        key, _, value = mode.partition("=")
        overrides["clusterns"] = {key: json.loads(value) if value[:1] in "0123456789-[{tf" else value}
    return name, recipe, overrides


def _run_dir(out: Path, spec: str, seed: int) -> Path:
    """'clusterns:false_negatives=mask', 42 -> OUT/clusterns-false_negativesmask-s42."""
    return out / f"{spec.replace(':', '-').replace('=', '')}-s{seed}"


def run_one(spec: str, seed: int, steps: int, out: Path, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    import hardcse
    from hardcse.training.run import train

    name, recipe, overrides = _variant(spec)
    run_dir = _run_dir(out, name, seed)
    if (run_dir / "results.json").is_file() and (run_dir / "steptimes.json").is_file():
        return json.loads((run_dir / "results.json").read_text())
    timer = StepTimer()
    cfg = hardcse.make_config(
        preset="cpu", recipe=recipe, steps=steps, seed=seed, output=str(run_dir), data_dir=str(data_dir()), **overrides
    )
    # The untrained model's scores are the same for every run: score it once and hand them to
    # later runs (saves a seven-task evaluation per run).
    shared_start = out / "start.json"
    start = json.loads(shared_start.read_text()) if shared_start.is_file() else None
    results = train(cfg, overwrite=True, show_progress=False, callbacks=[timer], start=start)
    (run_dir / "steptimes.json").write_text(json.dumps(timer.times))
    if not shared_start.is_file():
        shutil.copy(run_dir / "start.json", shared_start)
    return results


def _mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def report(specs: list[str], seeds: list[int], out: Path) -> str:
    lines = [
        "| method | "
        + " | ".join(["STS12", "STS13", "STS14", "STS15", "STS16", "STS-B", "SICK-R"])
        + " | Avg (mean ± std) | best step | median step s | index build s/step | cost vs first |",
        "|---|" + "---|" * 12,
    ]
    base_cost: float | None = None
    curves: dict[str, list[list[tuple[int, float]]]] = {}
    for spec in specs:
        runs, times = [], []
        builds = []
        for seed in seeds:
            run_dir = _run_dir(out, spec, seed)
            result = json.loads((run_dir / "results.json").read_text())
            runs.append(result)
            times.append(statistics.median(json.loads((run_dir / "steptimes.json").read_text())[3:]))
            # HSimCSE's bank encoding (initial build + refreshes, cumulative) amortised per step;
            # the median step time leaves the refresh step's outlier out, so nothing counts twice.
            built = [e["index_build_s"] for e in result["history"] if "index_build_s" in e]
            builds.append(built[-1] / result["steps"] if built else 0.0)
        cost = statistics.median(times) + statistics.mean(builds)
        base_cost = base_cost or cost
        per_task = [statistics.mean(r["test"]["tasks"][t]["spearman"] for r in runs) for t in ORDER]
        avgs = [r["test"]["avg"] for r in runs]
        best = ",".join(str(r["best_step"]) for r in runs)
        lines.append(
            f"| {spec} | "
            + " | ".join(f"{v:.2f}" for v in per_task)
            + f" | {_mean_std(avgs)} | {best} | {statistics.median(times):.3f} | {statistics.mean(builds):.3f}"
            + f" | {cost / base_cost:.3f} |"
        )
        curves[spec] = [
            [(e["step"], e["stsb_dev"]) for e in r["history"] if e.get("stsb_dev") is not None] for r in runs
        ]
    start = runs[0]["start"]
    lines.append(
        "| untrained | "
        + " | ".join(f"{start['tasks'][t]['spearman']:.2f}" for t in ORDER)
        + f" | {start['avg']:.2f} | | | | |"
    )
    _plot(curves, out / "dev_curves.png")
    return "\n".join(lines)


def _plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for spec, runs in curves.items():
        steps = [s for s, _ in runs[0]]
        values = np.array([[v for _, v in run] for run in runs])
        mean = values.mean(axis=0)
        ax.plot(steps, mean, marker="o", label=f"{spec} (mean of {len(runs)} seeds)")
        if len(runs) > 1:
            ax.fill_between(steps, values.min(axis=0), values.max(axis=0), alpha=0.15)
    ax.set_xlabel("step")
    ax.set_ylabel("STS-B dev Spearman x100")
    ax.set_title("STS-B dev during training (band: min-max over seeds)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--recipes",
        default="simcse,clusterns",
        help="comma list; variants: hsimcse:refresh, clusterns:false_negatives=mask",
    )
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/compare"))
    parser.add_argument(
        "--runs",
        default=None,
        help="explicit queue 'spec@seed,...' (keeps both workers busy across recipes); no report",
    )
    args = parser.parse_args()
    specs = args.recipes.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(spec, seed) for seed in seeds for spec in specs]
    if args.runs:
        jobs = [(item.rpartition("@")[0], int(item.rpartition("@")[2])) for item in args.runs.split(",")]
    threads = 1 if args.workers > 1 else 2
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(run_one, spec, seed, args.steps, args.out, threads) for spec, seed in jobs]
        for (spec, seed), fut in zip(jobs, futures, strict=True):
            res = fut.result()
            print(f"{spec} seed {seed}: avg {res['test']['avg']:.2f}, best step {res['best_step']}", flush=True)
    if args.runs:
        return
    table = report(specs, seeds, args.out)
    (args.out / "report.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
