"""Three training runs at once on one machine against one run alone ("under load").

A small model (a random 2-layer, 64-dim BERT written to a temporary directory) trains for a few
steps on the real corpus and is scored on the real seven STS test sets, through the real CLI
(``hardcse train``), first alone, then three identical runs (same seed) started together. Each
concurrent run must exit 0 and write complete outputs (``results.json``, ``config.yaml``,
``model/`` loadable by plain ``SentenceTransformer``), and, the seed being the same, the same
scores as the run alone. Prints the wall times and their ratio.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/concurrent_runs.py [--steps 30] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, data_dir

sys.path.insert(0, str(ROOT / "tests"))


def command(model: Path, out: Path, steps: int) -> list[str]:
    return [
        str(Path(sys.executable).parent / "hardcse"),
        "train",
        "--quiet",
        "--model",
        str(model),
        "--max-sentences",
        "4000",
        "--steps",
        str(steps),
        "--eval-steps",
        str(max(1, steps // 3)),
        "--batch-size",
        "32",
        "--lr",
        "0.0005",
        "--data-dir",
        str(data_dir()),
        "--output",
        str(out),
    ]


def check(out: Path) -> dict:
    """The run's results, after checking that every output is complete."""
    from sentence_transformers import SentenceTransformer

    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert (out / "config.yaml").is_file() and (out / "results.md").is_file() and (out / "curves.png").is_file()
    SentenceTransformer(str(out / "model"), device="cpu").encode(["a loadable model"])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from helpers import make_tiny_bert

    with tempfile.TemporaryDirectory(prefix="bench-concurrent-") as tmp:
        root = Path(tmp)
        model = make_tiny_bert(root / "bert", hidden=64, layers=2)
        t0 = time.perf_counter()
        subprocess.run(command(model, root / "alone", args.steps), check=True, capture_output=True)
        alone = time.perf_counter() - t0
        reference = check(root / "alone")

        t0 = time.perf_counter()
        procs = [
            subprocess.Popen(
                command(model, root / f"run{i}", args.steps), stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            for i in range(args.runs)
        ]
        walls = []
        for proc in procs:
            _, err = proc.communicate()
            walls.append(time.perf_counter() - t0)
            if proc.returncode != 0:
                raise SystemExit(f"a concurrent run failed ({proc.returncode}): {err.decode()[-500:]}")
        together = time.perf_counter() - t0
        same = []
        for i in range(args.runs):
            results = check(root / f"run{i}")
            same.append(
                results["best_step"] == reference["best_step"]
                and all(
                    f"{results['test']['tasks'][t]['spearman']:.2f}"
                    == f"{reference['test']['tasks'][t]['spearman']:.2f}"
                    for t in reference["test"]["tasks"]
                )
            )
    print(f"small BERT (2 layers, 64 dims), {args.steps} steps, batch 32, seven real STS test sets")
    print(f"one run alone: {alone:.1f} s wall; seven-task avg {reference['test']['avg']:.2f}")
    print(
        f"{args.runs} runs at once: {together:.1f} s wall for all ({', '.join(f'{w:.1f}' for w in walls)} s), "
        f"{together / alone:.2f}x one run alone; {args.runs / (together / alone):.2f} runs' work per alone-run time"
    )
    print(f"every concurrent run complete and equal to the run alone (best step, scores): {all(same)}")


if __name__ == "__main__":
    main()
