"""The run report: ``results.md`` (before/after table) and ``curves.png`` (loss, STS-B dev and
the objective's diagnostics against step)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hardcse.io import atomic_write_text, atomic_write_with

# History keys that are not diagnostics (plotted in their own panels or not at all).
_NOT_DIAGNOSTICS = {"step", "loss", "stsb_dev", "learning_rate", "grad_norm", "infonce"}


def write_report(out: Path, results: dict[str, Any], config: Any) -> None:
    from hardcse.evaluation.tables import format_comparison

    lines = [
        f"# hardcse {results['recipe']} run",
        "",
        f"- model: `{results['model']}`; preset `{results.get('preset')}`; seed {results['seed']}",
        f"- steps: {results['steps']}; best {results.get('dev_set', 'STS-B dev')} {results['stsb_dev_best']:.2f}"
        f" at step {results['best_step']}"
        f" (untrained: {results['start'].get('stsb_dev', float('nan')):.2f})",
        f"- wall time: {results['seconds']:.0f} s",
        "",
    ]
    if results["test"]["tasks"]:
        lines += [
            "Spearman x100, cosine, STS12-16 'all' aggregation, STS-B and SICK-R test splits:",
            "",
            format_comparison(results["start"], results["test"], labels=("untrained", "trained")),
            "",
        ]
    if results["test"].get("pairs"):
        from hardcse.evaluation.pairs import format_pair_comparison

        table = format_pair_comparison(results["start"].get("pairs", {}), results["test"]["pairs"])
        lines += ["Test pairs (Spearman x100, bootstrap 95% interval over pairs):", "", "```", table, "```", ""]
    lines += [
        "![curves](curves.png)",
        "",
    ]
    atomic_write_text(out / "results.md", "\n".join(lines))
    atomic_write_with(out / "curves.png", lambda tmp: plot_curves(results, tmp))


def plot_curves(results: dict[str, Any], path: Path) -> None:
    """Loss (raw and smoothed), STS-B dev and every diagnostic in the history, against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    history = results["history"]
    diag_keys: list[str] = []
    for entry in history:
        for key in entry:
            if key not in _NOT_DIAGNOSTICS and key not in diag_keys:
                diag_keys.append(key)
    panels = 2 + len(diag_keys)
    cols = 2 if panels <= 4 else 3
    rows = (panels + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.4 * rows), squeeze=False)
    flat = axes.ravel()

    steps = np.array([e["step"] for e in history if e.get("loss") is not None])
    loss = np.array([e["loss"] for e in history if e.get("loss") is not None], dtype=float)
    ax = flat[0]
    if len(loss):
        window = max(1, min(20, len(loss) // 10))
        ax.plot(steps, loss, color="tab:blue", alpha=0.3 if window > 1 else 1.0, lw=0.8, label="per step")
        if window > 1:
            smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1 :], smooth, color="tab:blue", lw=1.8, label=f"mean of {window}")
        ax.legend(fontsize=8)
    ax.set_title("training loss")
    ax.set_xlabel("step")

    ax = flat[1]
    dev = [(e["step"], e["stsb_dev"]) for e in history if e.get("stsb_dev") is not None]
    if dev:
        xs, ys = zip(*dev, strict=True)
        ax.plot(xs, ys, marker="o", color="tab:green")
        best = results.get("best_step")
        if best is not None:
            ax.axvline(best, color="gray", ls="--", lw=1, label=f"best step {best}")
            ax.legend(fontsize=8)
    ax.set_title("STS-B dev Spearman x100")
    ax.set_xlabel("step")

    for ax, key in zip(flat[2:], diag_keys, strict=False):
        pts = [(e["step"], e[key]) for e in history if e.get(key) is not None]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, lw=1.2, color="tab:purple")
        ax.set_title(key)
        ax.set_xlabel("step")
    for ax in flat[panels:]:
        ax.axis("off")
    fig.suptitle(f"{results['recipe']} on {results['model']} (seed {results['seed']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
