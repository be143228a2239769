"""Time hardcse's STS evaluation against sentence-transformers' EmbeddingSimilarityEvaluator.

Both score the same model (the bundled all-MiniLM-L6-v2, its own mean pooling) on the same seven
test sets (read once with hardcse's loaders): STS12-16 as one evaluator per year over the
concatenated sub-datasets (SentEval's ``all``), STS-B test and SICK-R test. The model's
``max_seq_length`` is set to its 512 positions for every contender (SentEval does not truncate),
so the scores must agree.

Contenders, run in rotating order for ``--rounds`` rounds in one process:

* ``hardcse``: ``evaluate_model`` (reads the files, encodes each distinct sentence once in one
  call, batch 128, linear layers on oneDNN with bias and GELU fused);
* ``hardcse-stock``: the same with ``fused_kernels=False`` (torch's stock linear and GELU), to
  show what the fused kernels add;
* ``st-16``: one ``EmbeddingSimilarityEvaluator`` per task, its default batch size 16;
* ``st-128``: the same with batch size 128 (hardcse's), to separate batching from deduplication.

Prints the median wall and CPU time of each, the ratios, and the score table (two decimals). On
a shared machine, CPU time is the steadier figure; ``--threads 1`` avoids the thread
synchronisation stalls that small batches suffer when the cores are oversubscribed.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/eval_speed.py [--rounds 3] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["STS12", "STS13", "STS14", "STS15", "STS16", "STSBenchmark", "SICKRelatedness"]
HEAD = ["STS12", "STS13", "STS14", "STS15", "STS16", "STS-B", "SICK-R"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("HARDCSE_DATA", str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    from hardcse.data.sts import load_tasks
    from hardcse.evaluation import evaluate_model
    from hardcse.models.defaults import resolve_model_name

    data_dir = Path(args.data_dir)
    model = SentenceTransformer(resolve_model_name("default"), device="cpu")
    model.max_seq_length = 512
    model.encode(["warm up the kernels"] * 8)

    data = load_tasks(ORDER, data_dir)
    pooled = {}
    for task, subsets in data.items():
        parts = list(subsets.values())
        pooled[task] = (
            [s for p in parts for s in p.sentences1],
            [s for p in parts for s in p.sentences2],
            np.concatenate([p.scores for p in parts]).tolist(),
        )
    n_sentences = sum(2 * len(v[2]) for v in pooled.values())
    n_distinct = len({s for s1, s2, _ in pooled.values() for s in s1 + s2})

    def run_hardcse(fused: bool = True) -> dict[str, float]:
        result = evaluate_model(model, data_dir=data_dir, batch_size=128, show_progress=False, fused_kernels=fused)
        return {t: result["tasks"][t]["spearman"] for t in ORDER}

    def run_st(batch_size: int) -> dict[str, float]:
        scores = {}
        for task, (s1, s2, gold) in pooled.items():
            evaluator = EmbeddingSimilarityEvaluator(
                s1, s2, gold, batch_size=batch_size, main_similarity="cosine", name=task, write_csv=False
            )
            scores[task] = 100 * evaluator(model)[f"{task}_spearman_cosine"]
        return scores

    contenders = {
        "hardcse": run_hardcse,
        "hardcse-stock": lambda: run_hardcse(False),
        "st-16": lambda: run_st(16),
        "st-128": lambda: run_st(128),
    }
    names = list(contenders)
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    scores: dict[str, dict[str, float]] = {}
    load_before = os.getloadavg()[0]
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0, c0 = time.perf_counter(), time.process_time()
            scores[name] = contenders[name]()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            print(f"round {r + 1} {name:<13} {times[name][-1]:7.1f} s wall {cpu[name][-1]:7.1f} s cpu", flush=True)

    med = {n: statistics.median(times[n]) for n in names}
    med_cpu = {n: statistics.median(cpu[n]) for n in names}
    print()
    print(
        f"all-MiniLM-L6-v2, 7 STS test sets: {n_sentences} sentences, {n_distinct} distinct; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds; "
        f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after ({os.cpu_count()} cores, shared)"
    )
    print("| contender     | median wall s | wall runs (s) | median CPU s | wall / hardcse | CPU / hardcse |")
    print("|:--------------|--------------:|:--------------|-------------:|---------------:|--------------:|")
    for n in names:
        runs = ", ".join(f"{t:.1f}" for t in times[n])
        print(
            f"| {n:<13} | {med[n]:13.1f} | {runs} | {med_cpu[n]:12.1f} | {med[n] / med['hardcse']:14.2f} "
            f"| {med_cpu[n] / med_cpu['hardcse']:13.2f} |"
        )
    print()
    print("| run           | " + " | ".join(f"{h:>6}" for h in HEAD) + " |    Avg |")
    print("|:--------------|" + "|".join("-------:" for _ in HEAD) + "|-------:|")
    for n in names:
        avg = np.mean([round(scores[n][t], 2) for t in ORDER])
        print(f"| {n:<13} | " + " | ".join(f"{scores[n][t]:6.2f}" for t in ORDER) + f" | {avg:6.2f} |")
    same = all(f"{scores[n][t]:.2f}" == f"{scores['hardcse'][t]:.2f}" for n in names for t in ORDER)
    print(f"identical to two decimals: {'yes' if same else 'NO'}")
    # Different batching and kernels round differently in float32; show how far apart that is.
    gap = max(abs(scores[n][t] - scores["hardcse"][t]) for n in names for t in ORDER)
    print(f"largest difference from hardcse at full precision: {gap:.1e} (Spearman x 100)")


if __name__ == "__main__":
    main()
