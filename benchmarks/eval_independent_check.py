"""Check hardcse's STS numbers against an independent computation.

1. hardcse: ``load_sentence_model("default", pooling="mean")`` + ``evaluate_model`` (the Python
   path behind ``hardcse evaluate default --pooling mean``), all seven tasks, ``all`` aggregation.
2. Independent: the files are read here with a few lines of plain string splitting (no hardcse
   code, no CSV module, sentences passed exactly as written), a plain ``SentenceTransformer(path)``
   encodes each sub-dataset's two sides, cosine similarity in numpy, ``scipy.stats.spearmanr``
   over each year's pooled sub-datasets (SentEval's ``all``), STS-B and SICK-R test. Like
   SentEval, no truncation: ``max_seq_length`` is set to the 512 positions of the model.

Prints both tables and whether every per-task number agrees to two decimals.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/eval_independent_check.py [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["STS12", "STS13", "STS14", "STS15", "STS16", "STSBenchmark", "SICKRelatedness"]
HEAD = ["STS12", "STS13", "STS14", "STS15", "STS16", "STS-B", "SICK-R"]
YEARS = {
    "STS12": ["MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews"],
    "STS13": ["FNWN", "headlines", "OnWN"],
    "STS14": ["deft-forum", "deft-news", "headlines", "images", "OnWN", "tweet-news"],
    "STS15": ["answers-forums", "answers-students", "belief", "headlines", "images"],
    "STS16": ["answer-answer", "headlines", "plagiarism", "postediting", "question-question"],
}


def read_independently(data: Path) -> dict[str, list[tuple[list[str], list[str], list[float]]]]:
    """{task: [(sentences1, sentences2, gold) per sub-dataset]} read with plain string splitting."""
    sts = data / "senteval" / "STS"
    tasks: dict[str, list[tuple[list[str], list[str], list[float]]]] = {}
    for year, names in YEARS.items():
        parts = []
        for name in names:
            inputs = (sts / f"{year}-en-test" / f"STS.input.{name}.txt").read_text(encoding="utf-8").split("\n")
            golds = (sts / f"{year}-en-test" / f"STS.gs.{name}.txt").read_text(encoding="utf-8").split("\n")
            kept = [(line.split("\t"), float(g)) for line, g in zip(inputs, golds, strict=True) if g.strip()]
            parts.append(([p[0][0] for p in kept], [p[0][1] for p in kept], [p[1] for p in kept]))
        tasks[year] = parts
    rows = [line.split("\t") for line in (sts / "STSBenchmark" / "sts-test.csv").read_text("utf-8").splitlines()]
    tasks["STSBenchmark"] = [([r[5] for r in rows], [r[6] for r in rows], [float(r[4]) for r in rows])]
    lines = (data / "senteval" / "SICK" / "SICK_test_annotated.txt").read_text("utf-8").splitlines()[1:]
    rows = [line.rstrip("\r").split("\t") for line in lines]
    tasks["SICKRelatedness"] = [([r[1] for r in rows], [r[2] for r in rows], [float(r[3]) for r in rows])]
    return tasks


def independent_scores(model_path: str, data: Path) -> tuple[dict[str, float], dict[str, float]]:
    """Spearman x100 per task, from raw cosines and from cosines rounded to 6 decimals.

    Encoding the two sides separately gives two copies of the same sentence slightly different
    float noise (different padding in their batches), which breaks ties between pairs of
    identical sentences (cosine 1) at random; rounding to 6 decimals restores those ties.
    """
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path, device="cpu")
    model.max_seq_length = 512
    raw, rounded = {}, {}
    for task, parts in read_independently(data).items():
        gold, system = [], []
        for s1, s2, g in parts:
            e1 = model.encode(s1, batch_size=128, convert_to_numpy=True).astype(np.float64)
            e2 = model.encode(s2, batch_size=128, convert_to_numpy=True).astype(np.float64)
            system.append((e1 * e2).sum(1) / (np.linalg.norm(e1, axis=1) * np.linalg.norm(e2, axis=1)))
            gold.append(np.array(g))
        raw[task] = 100 * spearmanr(np.concatenate(gold), np.concatenate(system))[0]
        rounded[task] = 100 * spearmanr(np.concatenate(gold), np.round(np.concatenate(system), 6))[0]
    return raw, rounded


def table(rows: dict[str, dict[str, float]]) -> str:
    """A Markdown table, one row per run, Avg of the two-decimal values (as SimCSE)."""
    lines = [
        "| run         | " + " | ".join(f"{h:>6}" for h in HEAD) + " |    Avg |",
        "|:------------|" + "|".join("-------:" for _ in HEAD) + "|-------:|",
    ]
    for label, scores in rows.items():
        avg = np.mean([round(scores[t], 2) for t in ORDER])
        lines.append(f"| {label:<11} | " + " | ".join(f"{scores[t]:6.2f}" for t in ORDER) + f" | {avg:6.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("HARDCSE_DATA", str(ROOT.parent / "shared" / "data")))
    args = parser.parse_args()
    data = Path(args.data_dir)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from hardcse.evaluation import evaluate_model
    from hardcse.models.defaults import resolve_model_name
    from hardcse.models.loading import load_sentence_model

    path = resolve_model_name("default")
    t0 = time.perf_counter()
    model = load_sentence_model("default", pooling="mean", device="cpu")
    result = evaluate_model(model, data_dir=data, show_progress=False, model_name="all-MiniLM-L6-v2")
    t_hardcse = time.perf_counter() - t0
    ours = {t: result["tasks"][t]["spearman"] for t in ORDER}

    t0 = time.perf_counter()
    theirs, theirs_rounded = independent_scores(path, data)
    t_independent = time.perf_counter() - t0

    print("model: all-MiniLM-L6-v2 (bundled copy), mean pooling, cosine, Spearman x100, STS12-16 'all', test sets")
    print(table({"hardcse": ours, "independent": theirs, "indep. 6dp": theirs_rounded}))
    print("(indep. 6dp: the independent cosines rounded to 6 decimals before ranking)")
    for label, other in (("independent", theirs), ("indep. 6dp", theirs_rounded)):
        diffs = {t: abs(ours[t] - other[t]) for t in ORDER}
        differ = [t for t in ORDER if f"{ours[t]:.2f}" != f"{other[t]:.2f}"]
        print(
            f"hardcse vs {label}: max |difference| {max(diffs.values()):.1e} ({max(diffs, key=diffs.get)}); "
            f"equal to two decimals on {7 - len(differ)}/7 tasks" + (f" (not: {', '.join(differ)})" if differ else "")
        )
    print(f"wall time: hardcse {t_hardcse:.1f} s, independent {t_independent:.1f} s (2 CPU cores, shared)")


if __name__ == "__main__":
    main()
