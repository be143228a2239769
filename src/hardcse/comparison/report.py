"""The comparison report: ``report.json`` (every number), ``report.md`` (tables) and ``curves.png``
(STS-B dev against step, mean over seeds with a min-max band, one colour per recipe)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hardcse.comparison.runner import RunSpec
from hardcse.comparison.stats import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    bootstrap_averages,
    bootstrap_summary,
    mean_std,
    paired_ttest,
)
from hardcse.errors import ConfigError
from hardcse.io import atomic_write_json, atomic_write_text, atomic_write_with
from hardcse.numeric import is_nan

Predictions = Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]]


def _flatten(predictions: Predictions, tasks: Sequence[str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per task, the subsets concatenated (the ``all`` aggregation): ``(gold, cosine)`` dicts."""
    gold, cosine = {}, {}
    for task in tasks:
        if task not in predictions:
            raise ConfigError(f"the test predictions lack task {task}; delete test_predictions.npz to recompute them.")
        subsets = list(predictions[task].values())
        gold[task] = np.concatenate([np.asarray(g, dtype=np.float64) for g, _ in subsets])
        cosine[task] = np.concatenate([np.asarray(c, dtype=np.float64) for _, c in subsets])
    return gold, cosine


def _stat(values: Sequence[float]) -> dict[str, Any]:
    mean, std = mean_std(values)
    return {"mean": mean, "std": std, "values": [float(v) for v in values]}


def summarize(
    plan: Sequence[RunSpec],
    results: Mapping[str, dict],
    predictions: Mapping[str, Predictions],
    infos: Mapping[str, dict] | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES,
    bootstrap_seed: int = BOOTSTRAP_SEED,
    start_cosines: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, Any]:
    """Every number of the report (what ``report.json`` holds), from the finished runs.

    ``plan`` gives the recipes (first = baseline) and seeds; ``results`` and ``predictions`` are
    keyed by run name (``<label>-s<seed>``). ``start_cosines`` are the untrained encoder's per-pair
    cosines on each test pair set (the baseline's start), for the bootstrap against the start.
    """
    labels = list(dict.fromkeys(spec.label for spec in plan))
    seeds = list(dict.fromkeys(spec.seed for spec in plan))
    by_label: dict[str, list[RunSpec]] = {label: [s for s in plan if s.label == label] for label in labels}
    first = results[plan[0].name]
    tasks = list(first["test"]["tasks"])
    for spec in plan:
        if list(results[spec.name]["test"]["tasks"]) != tasks:
            raise ConfigError(
                f"run '{spec.name}' was scored on other test tasks than '{plan[0].name}'; "
                "a comparison needs the same test tasks (test_tasks) for every recipe."
            )

    # Paired bootstrap: one set of draws shared by every run (the draws depend only on the seed
    # and the task sizes), each run's task-average Spearman per resample.
    gold, _ = _flatten(predictions[plan[0].name], tasks)
    flat: dict[str, dict[str, np.ndarray]] = {}
    for spec in plan:
        run_gold, cosine = _flatten(predictions[spec.name], tasks)
        if any(not np.array_equal(run_gold[t], gold[t]) for t in tasks):
            raise ConfigError(
                f"run '{spec.name}' was scored on other test pairs than '{plan[0].name}' (another data directory?); "
                "a comparison needs the same test data for every recipe."
            )
        flat[spec.name] = cosine
    names = [spec.name for spec in plan]
    boot = bootstrap_averages(gold, [flat[n] for n in names], resamples=resamples, seed=bootstrap_seed)
    boot_by_name = dict(zip(names, boot, strict=True))

    baseline = labels[0]
    recipes: dict[str, Any] = {}
    for label in labels:
        specs = by_label[label]
        runs = [results[s.name] for s in specs]
        entry: dict[str, Any] = {
            "recipe": runs[0]["recipe"],
            "tasks": {t: _stat([r["test"]["tasks"][t]["spearman"] for r in runs]) for t in tasks},
            "avg": _stat([r["test"]["avg"] for r in runs]),
            "stsb_dev_best": _stat([r["stsb_dev_best"] for r in runs]),
            "runs": [],
        }
        for spec, r in zip(specs, runs, strict=True):
            info = (infos or {}).get(spec.name, {})
            entry["runs"].append(
                {
                    "name": spec.name,
                    "seed": spec.seed,
                    "avg": r["test"]["avg"],
                    "stsb_dev_best": r["stsb_dev_best"],
                    "best_step": r["best_step"],
                    "steps": r["steps"],
                    "train_seconds": info.get("train_seconds"),
                    "seconds": r["seconds"],
                    "resumed_from_step": info.get("resumed_from_step"),
                }
            )
        if label != baseline:
            base_runs = [results[s.name] for s in by_label[baseline]]
            cand, base = [r["test"]["avg"] for r in runs], [r["test"]["avg"] for r in base_runs]
            diffs = np.mean([boot_by_name[s.name] for s in specs], axis=0) - np.mean(
                [boot_by_name[s.name] for s in by_label[baseline]], axis=0
            )
            entry["vs_baseline"] = {
                "baseline": baseline,
                "delta_avg": float(np.mean(cand) - np.mean(base)),
                "delta_tasks": {
                    t: entry["tasks"][t]["mean"]
                    - float(np.mean([r["test"]["tasks"][t]["spearman"] for r in base_runs]))
                    for t in tasks
                },
                "ttest_p": paired_ttest(cand, base),
                "bootstrap": bootstrap_summary(diffs),
            }
        recipes[label] = entry

    pair_sets = _pair_sets_summary(plan, by_label, results, predictions, start_cosines, resamples, bootstrap_seed)
    untrained = {}
    for label in labels:
        start = results[by_label[label][0].name]["start"]
        untrained[label] = {
            "tasks": {t: start["tasks"][t]["spearman"] for t in tasks if t in start.get("tasks", {})},
            "avg": start.get("avg"),
            "stsb_dev": start.get("stsb_dev"),
            "pairs": {name: r["spearman"] for name, r in (start.get("pairs") or {}).items()},
        }
    curves = {
        label: {
            str(s.seed): [
                [e["step"], e["stsb_dev"]] for e in results[s.name]["history"] if e.get("stsb_dev") is not None
            ]
            for s in by_label[label]
        }
        for label in labels
    }
    return {
        "preset": first.get("preset"),
        "model": first.get("model"),
        "seeds": seeds,
        "baseline": baseline,
        "tasks": tasks,
        "metric": "Spearman x100 of cosine similarity; STS12-16 'all' aggregation, STS-B and SICK-R test",
        "bootstrap": {"resamples": resamples, "seed": bootstrap_seed, "level": 0.95, "unit": "test pairs"},
        "recipes": recipes,
        "pair_sets": pair_sets,
        "dev_set": first.get("dev_set", "STS-B dev"),
        "untrained": untrained,
        "curves": curves,
    }


def _pair_sets_summary(
    plan: Sequence[RunSpec],
    by_label: Mapping[str, Sequence[RunSpec]],
    results: Mapping[str, dict],
    predictions: Mapping[str, Predictions],
    start_cosines: Mapping[str, Sequence[float]] | None,
    resamples: int,
    bootstrap_seed: int,
) -> dict[str, Any]:
    """Per test pair set (``--test``): every recipe's score over seeds, its difference from the
    baseline recipe (paired t-test over seeds, paired bootstrap over the set's pairs) and from the
    untrained start (the baseline's; bootstrap over pairs, the start being one fixed model)."""
    from hardcse.evaluation.pairs import PREDICTION_PREFIX

    first = results[plan[0].name]
    names = list(first["test"].get("pairs") or {})
    labels = list(by_label)
    baseline = labels[0]
    start_scores = first["start"].get("pairs") or {}
    summary: dict[str, Any] = {}
    for name in names:
        key = PREDICTION_PREFIX + name
        gold = None
        cosines: dict[str, np.ndarray] = {}
        for spec in plan:
            if name not in (results[spec.name]["test"].get("pairs") or {}) or key not in predictions[spec.name]:
                raise ConfigError(
                    f"run '{spec.name}' was not scored on the test pairs '{name}'; a comparison needs the same "
                    "test pairs (test) for every recipe."
                )
            run_gold, cosine = predictions[spec.name][key]["pairs"]
            if gold is None:
                gold = np.asarray(run_gold, dtype=np.float64)
            elif not np.array_equal(gold, run_gold):
                raise ConfigError(f"run '{spec.name}' was scored on other '{name}' pairs than '{plan[0].name}'.")
            cosines[spec.name] = np.asarray(cosine, dtype=np.float64)
        runs = [cosines[s.name] for s in plan]
        start = start_cosines.get(name) if start_cosines else None
        if start is not None:
            runs.append(np.asarray(start, dtype=np.float64))
        boot = bootstrap_averages({name: gold}, [{name: c} for c in runs], resamples=resamples, seed=bootstrap_seed)
        by_name = {s.name: boot[i] for i, s in enumerate(plan)}
        start_boot = boot[-1] if start is not None else None
        entry: dict[str, Any] = {"pairs": int(len(gold)), "untrained": start_scores.get(name, {}).get("spearman")}
        recipes: dict[str, Any] = {}
        base_values = [results[s.name]["test"]["pairs"][name]["spearman"] for s in by_label[baseline]]
        base_boot = np.mean([by_name[s.name] for s in by_label[baseline]], axis=0)
        for label in labels:
            specs = by_label[label]
            values = [results[s.name]["test"]["pairs"][name]["spearman"] for s in specs]
            mean_boot = np.mean([by_name[s.name] for s in specs], axis=0)
            stats: dict[str, Any] = {"score": _stat(values)}
            if label != baseline:
                stats["vs_baseline"] = {
                    "baseline": baseline,
                    "delta": float(np.mean(values) - np.mean(base_values)),
                    "ttest_p": paired_ttest(values, base_values),
                    "bootstrap": bootstrap_summary(mean_boot - base_boot),
                }
            if start_boot is not None and entry["untrained"] is not None:
                stats["vs_untrained"] = {
                    "delta": float(np.mean(values) - entry["untrained"]),
                    "bootstrap": bootstrap_summary(mean_boot - start_boot),
                }
            recipes[label] = stats
        entry["recipes"] = recipes
        summary[name] = entry
    return summary


# ---------------------------------------------------------------------------------------------
# Markdown


def _num(value: float | None, digits: int = 2, signed: bool = False) -> str:
    if value is None or is_nan(value):
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _pm(stat: Mapping[str, Any]) -> str:
    if stat["std"] is None:
        return _num(stat["mean"])
    return f"{stat['mean']:.2f} ± {stat['std']:.2f}"


def _pvalue(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    from hardcse.evaluation.tables import markdown_table

    return markdown_table(header, rows, label_column=True)


def format_report(summary: Mapping[str, Any]) -> str:
    """``report.md``: scores (mean ± std over seeds), differences from the baseline, and the runs."""
    from hardcse.data.sts import DISPLAY_NAMES

    tasks = summary["tasks"]
    names = [DISPLAY_NAMES.get(t, t) for t in tasks]
    seeds = summary["seeds"]
    n = len(seeds)
    recipes = summary["recipes"]
    baseline = summary["baseline"]
    boot = summary["bootstrap"]

    score_rows = []
    # One row per distinct untrained encoder: the baseline's start is "untrained", another start
    # (a recipe trained from another model) is named by the recipes that start from it.
    starts: dict[Any, list[str]] = {}
    for label, u in summary["untrained"].items():
        starts.setdefault(round(u["avg"], 6) if u["avg"] is not None else None, []).append(label)
    for labels in starts.values():
        u = summary["untrained"][labels[0]]
        row_label = "untrained" if baseline in labels else f"untrained ({', '.join(labels)})"
        score_rows.append([row_label, *(_num(u["tasks"].get(t)) for t in tasks), _num(u["avg"])])
    for label, entry in recipes.items():
        score_rows.append([label, *(_pm(entry["tasks"][t]) for t in tasks), _pm(entry["avg"])])

    diff_rows = []
    for label, entry in recipes.items():
        vs = entry.get("vs_baseline")
        if vs is None:
            continue
        b = vs["bootstrap"]
        interval = "n/a" if b["low"] is None else f"[{b['low']:+.2f}, {b['high']:+.2f}]"
        diff_rows.append(
            [
                label,
                *(_num(vs["delta_tasks"][t], signed=True) for t in tasks),
                _num(vs["delta_avg"], signed=True),
                _pvalue(vs["ttest_p"]),
                interval,
                _num(b["p_le_0"], 3),
            ]
        )

    run_rows = []
    for entry in recipes.values():
        for run in entry["runs"]:
            seconds = _num(run["train_seconds"], 0)
            if run["resumed_from_step"] is not None:
                seconds += f" (resumed at step {run['resumed_from_step']})"
            run_rows.append(
                [
                    run["name"],
                    str(run["seed"]),
                    _num(run["avg"]),
                    _num(run["stsb_dev_best"]),
                    f"{run['best_step']} / {run['steps']}",
                    seconds,
                    _num(run["seconds"], 0),
                ]
            )

    pair_lines = _format_pair_sets(summary)
    lines = [
        "# hardcse compare",
        "",
        f"- preset `{summary['preset']}`, model `{summary['model']}`; seeds {', '.join(map(str, seeds))}",
        f"- {summary['metric']}; mean ± sample std over {n} seed{'s' if n != 1 else ''}",
        "",
        *pair_lines,
        "## Test scores",
        "",
        _table(["Recipe", *names, "Avg"], score_rows),
        "",
        f"## Difference from {baseline}",
        "",
        f"Mean over seeds of (recipe - {baseline}), same seed paired. *t-test p*: two-sided paired t-test over"
        " seeds on Avg (n/a below 2 seeds or when every seed differs by the same amount). *bootstrap 95% CI* and"
        " *P(Δ≤0)*: paired bootstrap over test pairs"
        f" ({boot['resamples']} resamples of every task's pairs, seed {boot['seed']}; the Avg difference per seed,"
        " averaged over seeds); P(Δ≤0) is the fraction of resamples where the recipe is not better.",
        "",
        _table(["Recipe", *(f"Δ {x}" for x in names), "Δ Avg", "t-test p", "bootstrap 95% CI", "P(Δ≤0)"], diff_rows)
        if diff_rows
        else "(only one recipe)",
        "",
        "## Runs",
        "",
        f"Best step is the checkpoint selected on {summary.get('dev_set', 'STS-B dev')} (of the steps trained)."
        " Training s is the training"
        " loop (dev evaluations included) of the session that finished the run; wall s also counts the"
        " untrained and final evaluations.",
        "",
        _table(["Run", "seed", "Avg", "best dev", "best step", "training s", "wall s"], run_rows),
        "",
        f"![{summary.get('dev_set', 'STS-B dev')} against step](curves.png)",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Plot


def _curve_stats(by_seed: Mapping[str, Sequence[Sequence[float]]]) -> tuple[np.ndarray, ...]:
    """Steps, and mean / min / max over the seeds that reached each step (early stopping may end
    seeds at different steps)."""
    points: dict[int, list[float]] = {}
    for curve in by_seed.values():
        for step, value in curve:
            points.setdefault(int(step), []).append(float(value))
    steps = sorted(points)
    return (
        np.array(steps),
        np.array([np.mean(points[s]) for s in steps]),
        np.array([np.min(points[s]) for s in steps]),
        np.array([np.max(points[s]) for s in steps]),
    )


def plot_curves(summary: Mapping[str, Any], path: Path) -> None:
    """STS-B dev against step for every recipe: mean over seeds (line), min-max band, best mean
    marked. Left: the whole run from the untrained model (step 0); right: the same from the first
    evaluation on, where the recipes differ (the jump from step 0 squeezes them together on the left)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = plt.get_cmap("tab10").colors
    markers = "osD^vP*Xh<>"
    n_seeds = len(summary["seeds"])
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    zoom_low, zoom_high = math.inf, -math.inf
    for i, (label, by_seed) in enumerate(summary["curves"].items()):
        steps, mean, low, high = _curve_stats(by_seed)
        if not len(steps):
            continue
        color = colors[i % len(colors)]
        best = int(np.argmax(mean))
        # A different dash per recipe, so a recipe whose curve coincides with another's (e.g. a
        # method whose extra loss never fires) still shows under it.
        style = {"color": color, "lw": 2, "ls": ("-", "--", ":", "-.")[i % 4]}
        if len(steps) <= 25:  # markers on every evaluation only while they stay apart
            style.update(marker=markers[i % len(markers)], markersize=5)
        later = steps > 0
        if later.any():
            zoom_low, zoom_high = min(zoom_low, low[later].min()), max(zoom_high, high[later].max())
        for ax in axes:
            ax.plot(steps, mean, label=f"{label}  (best mean {mean[best]:.2f} at step {steps[best]})", **style)
            if n_seeds > 1:
                ax.fill_between(steps, low, high, color=color, alpha=0.18, lw=0)
            ax.plot(steps[best], mean[best], marker="o", markersize=13, mfc="none", mec=color, mew=2)
    title = f"mean of {n_seeds} seed{'s' if n_seeds != 1 else ''}" + (
        "; band: min-max over seeds" if n_seeds > 1 else ""
    )
    dev = summary.get("dev_set", "STS-B dev")
    axes[0].set_title(f"{dev} during training ({title})\nstep 0 = untrained; circle = best mean", fontsize=12)
    axes[1].set_title("the same, from the first evaluation on", fontsize=12)
    if math.isfinite(zoom_low):
        pad = max(0.1, 0.08 * (zoom_high - zoom_low))
        steps_all = [int(s) for c in summary["curves"].values() for curve in c.values() for s, _ in curve if s > 0]
        axes[1].set_ylim(zoom_low - pad, zoom_high + pad)
        axes[1].set_xlim(min(steps_all) - 0.04 * max(steps_all), max(steps_all) * 1.04)
    for ax in axes:
        ax.set_xlabel("training step", fontsize=12)
        ax.set_ylabel(f"{dev} Spearman x100", fontsize=12)
        ax.tick_params(labelsize=11)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=10, loc="lower right", framealpha=0.9)
    fig.suptitle(f"hardcse compare: preset {summary['preset']}, {summary['model']}", fontsize=13)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def write_report(output: str | Path, summary: Mapping[str, Any]) -> None:
    """Write ``report.json``, ``report.md`` and ``curves.png`` into ``output`` (each atomically)."""
    out = Path(output)
    atomic_write_json(out / "report.json", summary)
    atomic_write_text(out / "report.md", format_report(summary))
    atomic_write_with(out / "curves.png", lambda tmp: plot_curves(summary, tmp))


def _interval(boot: Mapping[str, Any]) -> str:
    return "n/a" if boot["low"] is None else f"[{boot['low']:+.2f}, {boot['high']:+.2f}]"


def _format_pair_sets(summary: Mapping[str, Any]) -> list[str]:
    """The in-domain section of ``report.md``: per test pair set, each recipe's score next to its
    seven-task average (adaptation against forgetting), with the differences from the baseline and
    from the untrained start."""
    sets = summary.get("pair_sets") or {}
    if not sets:
        return []
    baseline = summary["baseline"]
    lines = [
        "## Test pairs (in-domain) and the seven tasks",
        "",
        f"Mean ± std over seeds. *Δ {baseline}* and *Δ untrained*: difference of the means, with a paired"
        " bootstrap 95% CI over the set's pairs (the untrained encoder is one fixed model: the baseline's start)"
        " and, against the baseline, the paired t-test over seeds. *Avg*: the seven STS tasks (forgetting).",
        "",
    ]
    for name, entry in sets.items():
        rows = [["untrained", _num(entry["untrained"]), "", "", "", _num(summary["untrained"][baseline]["avg"])]]
        for label, stats in entry["recipes"].items():
            vs = stats.get("vs_baseline")
            vu = stats.get("vs_untrained")
            rows.append(
                [
                    label,
                    _pm(stats["score"]),
                    "" if vs is None else f"{_num(vs['delta'], signed=True)} {_interval(vs['bootstrap'])}",
                    "" if vs is None else _pvalue(vs["ttest_p"]),
                    "" if vu is None else f"{_num(vu['delta'], signed=True)} {_interval(vu['bootstrap'])}",
                    _pm(summary["recipes"][label]["avg"]),
                ]
            )
        header = ["Recipe", f"{name} ({entry['pairs']} pairs)", f"Δ {baseline} [95% CI]", "t-test p"]
        lines += [f"### {name}", "", _table([*header, "Δ untrained [95% CI]", "Avg"], rows), ""]
    return lines
