"""Recipes (and recipe variants) x seeds on the `cpu` preset, two runs side by side, with step times.

A thin layer over ``hardcse.comparison`` (what ``hardcse compare`` runs): the same run
directories (OUT/<label>-s<seed>/, finished runs skipped, interrupted ones continued from their
last checkpoint), the same statistics, report and curves. It adds what a benchmark needs and the
command does not:

* variants of a recipe as one spec: ``hsimcse:refresh`` (index mode), ``clusterns:reinit_empty=true``
  (any ``clusterns`` key); label ``hsimcse-refresh``, ``clusterns-reinit_emptytrue``;
* ``--workers 2``: two runs side by side, one torch thread each (on 2 cores this has more
  throughput than one 2-thread run; step times are then comparable within one such pool only);
* the wall time of every optimisation step (``steptimes.json``) and a cost table: median step time,
  HSimCSE's bank encoding (initial build and refreshes) amortised per step, cost relative to the
  first spec.

    .venv/bin/python benchmarks/compare_methods.py --recipes simcse,hsimcse,hsimcse:refresh \
        --seeds 42,43,44 --steps 250 --workers 2 --out benchmarks/out/compare

The report goes to OUT/<name>.md / .json / .png (``--name``, default the specs joined by ``_vs_``),
so it does not overwrite the report of a ``hardcse compare`` into the same directory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import StepTimer, data_dir  # noqa: E402

STEPTIMES = "steptimes.json"


def parse_spec(spec: str) -> tuple[str, str, dict]:
    """``'hsimcse:refresh'`` -> (label ``hsimcse-refresh``, recipe ``hsimcse``, config overrides)."""
    recipe, _, variant = spec.partition(":")
    overrides: dict = {}
    if variant and recipe == "hsimcse" and "=" not in variant:
        overrides["hsimcse"] = {"index_mode": variant}
    elif variant:
        key, _, value = variant.partition("=")
        overrides[recipe] = {key: json.loads(value) if value[:1] in "0123456789-[{tf" else value}
    return spec.replace(":", "-").replace("=", ""), recipe, overrides


def plan(specs: list[str], seeds: list[int], steps: int, out: Path) -> list:
    """The runs as ``hardcse.comparison`` RunSpecs (seed-major, like ``hardcse compare``)."""
    import hardcse
    from hardcse.comparison.runner import RunSpec

    runs = []
    for seed in seeds:
        for spec in specs:
            label, recipe, overrides = parse_spec(spec)
            config = hardcse.make_config(
                preset="cpu",
                recipe=recipe,
                steps=steps,
                seed=seed,
                output=str(out / f"{label}-s{seed}"),
                data_dir=str(data_dir()),
                **overrides,
            )
            runs.append(RunSpec(label=label, seed=seed, config=config))
    return runs


def run_one(run, out: Path, threads: int) -> dict:
    """Train (or skip, or continue) one run through ``run_all``, timing every step."""
    import torch

    torch.set_num_threads(threads)
    from hardcse.comparison.runner import run_all

    times = run.path / STEPTIMES
    if (run.path / "results.json").is_file() and times.is_file():
        return json.loads((run.path / "results.json").read_text())
    timer = StepTimer()
    results = run_all([run], out, show_progress=False, callbacks=[timer])[run.name]
    if timer.times:  # not when run_all found the run finished (trained elsewhere, untimed)
        times.write_text(json.dumps(timer.times))
    return results


def cost_table(runs: list) -> str:
    """Median step time, amortised bank encoding and cost relative to the first label."""
    lines = [
        "| recipe | median step s (per seed) | index build s/step | cost per step s | cost vs first |",
        "|:--|--:|--:|--:|--:|",
    ]
    base = None
    for label in dict.fromkeys(r.label for r in runs):
        medians, builds = [], []
        for r in (r for r in runs if r.label == label):
            if (r.path / STEPTIMES).is_file():
                times = json.loads((r.path / STEPTIMES).read_text())
                medians.append(statistics.median(times[3:]))  # the first steps pay one-off costs
            result = json.loads((r.path / "results.json").read_text())
            # Cumulative bank encoding (first build + refreshes) over the run's steps. The median
            # step leaves the refresh steps out, so nothing is counted twice.
            # Histories written before the diagnostics/ namespace hold it under the plain name.
            key = "diagnostics/index_build_s"
            key = key if any(key in e for e in result["history"]) else "index_build_s"
            built = [e[key] for e in result["history"] if key in e]
            builds.append(built[-1] / result["steps"] if built else 0.0)
        if not medians:
            lines.append(f"| {label} | n/a (not timed here) | {statistics.mean(builds):.3f} | | |")
            continue
        cost = statistics.median(medians) + statistics.mean(builds)
        base = base or cost
        lines.append(
            f"| {label} | {statistics.median(medians):.3f} ({', '.join(f'{m:.3f}' for m in medians)}) "
            f"| {statistics.mean(builds):.3f} | {cost:.3f} | {cost / base:.3f} |"
        )
    return "\n".join(lines)


def report(runs: list, out: Path, name: str) -> str:
    from hardcse.comparison.report import format_report, plot_curves, summarize
    from hardcse.comparison.runner import ensure_predictions, run_info
    from hardcse.io import atomic_write_json, atomic_write_text

    results = {r.name: json.loads((r.path / "results.json").read_text()) for r in runs}
    predictions = {r.name: ensure_predictions(r) for r in runs}
    summary = summarize(runs, results, predictions, {r.name: run_info(r) for r in runs})
    text = format_report(summary).replace("](curves.png)", f"]({name}.png)")
    text += "\n## Step cost\n\n" + cost_table(runs) + "\n"
    atomic_write_json(out / f"{name}.json", summary)
    atomic_write_text(out / f"{name}.md", text)
    plot_curves(summary, out / f"{name}.png")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default="simcse,clusterns", help="comma list, e.g. simcse,hsimcse:refresh")
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/compare"))
    parser.add_argument("--name", default=None, help="report file stem (default: the specs joined by _vs_)")
    parser.add_argument(
        "--runs",
        default=None,
        help="explicit queue 'spec@seed,...' (keeps both workers busy across recipes); no report",
    )
    args = parser.parse_args()
    specs = args.recipes.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.runs:
        pairs = [item.rpartition("@") for item in args.runs.split(",")]
        runs = [r for spec, _, seed in pairs for r in plan([spec], [int(seed)], args.steps, args.out)]
    else:
        runs = plan(specs, seeds, args.steps, args.out)
    threads = 1 if args.workers > 1 else 2
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(run_one, r, args.out, threads) for r in runs]
        for r, fut in zip(runs, futures, strict=True):
            res = fut.result()
            print(f"{r.name}: avg {res['test']['avg']:.2f}, best step {res['best_step']}", flush=True)
    if args.runs:
        return
    name = args.name or "_vs_".join(parse_spec(s)[0] for s in specs)
    print(report(runs, args.out, name))


if __name__ == "__main__":
    main()
