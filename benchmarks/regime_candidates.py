"""Starting-encoder candidates for a papers-like regime: STS and anisotropy per model.

For every model directory (or ``default``) given, prints one table row: the seven-task STS
average (Spearman x100, "all" aggregation) with raw ``[CLS]`` pooling and with mean pooling, and
the anisotropy, the mean cosine similarity of the ``[CLS]`` vectors of ``--pairs`` random pairs
of distinct corpus sentences (Ethayarajh, EMNLP 2019: a high mean cosine between unrelated
sentences means the vectors fill a narrow cone). Pairs are drawn with ``--seed``, so every model
is measured on the same pairs.

Usage::

    python benchmarks/regime_candidates.py default runs/mlm-reinit2/model [--pairs 1000]
    python benchmarks/regime_candidates.py --quick MODEL ...   # STS-B dev ([CLS]) and anisotropy only
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CORPUS = "corpus/wikipedia_vital_articles_en.sentences.txt"


def data_dir() -> Path:
    env = os.environ.get("HARDCSE_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def anisotropy(model_name: str, sentences: list[str], pairs: list[tuple[int, int]], batch_size: int = 128) -> float:
    """Mean cosine of the raw [CLS] vectors over ``pairs`` (indices into ``sentences``)."""
    from hardcse.models.loading import load_sentence_model

    model = load_sentence_model(model_name, pooling="cls", device="cpu")
    rows = sorted({i for pair in pairs for i in pair})
    vectors = model.encode([sentences[i] for i in rows], batch_size=batch_size, convert_to_tensor=True)
    vectors = torch.nn.functional.normalize(vectors.float(), dim=-1)
    where = {row: k for k, row in enumerate(rows)}
    a = vectors[[where[i] for i, _ in pairs]]
    b = vectors[[where[j] for _, j in pairs]]
    return float((a * b).sum(-1).mean())


def sts_average(model_name: str, pooling: str, data: dict) -> float:
    from hardcse.evaluation.sts import evaluate_model
    from hardcse.models.loading import load_sentence_model

    model = load_sentence_model(model_name, pooling=pooling, device="cpu")
    return float(evaluate_model(model, data=data, show_progress=False, pooling=pooling)["avg"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="model directories or names ('default': all-MiniLM-L6-v2)")
    parser.add_argument("--corpus", default=None, help=f"sentence file (default: DATA/{CORPUS})")
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument(
        "--quick", action="store_true", help="only STS-B dev with [CLS] and the anisotropy (~1 minute a model)"
    )
    args = parser.parse_args()

    from hardcse.data.corpus import read_corpus
    from hardcse.data.sts import load_tasks
    from hardcse.evaluation.sts import resolve_tasks

    data_path = data_dir()
    sentences = read_corpus([args.corpus or CORPUS], data_path)
    rng = random.Random(args.seed)
    pairs = [tuple(rng.sample(range(len(sentences)), 2)) for _ in range(args.pairs)]
    if args.quick:
        dev = load_tasks(["STSBenchmark"], data_path, "dev")
        print(f"STS-B dev Spearman x100 with [CLS]; anisotropy = mean [CLS] cosine of {args.pairs} random pairs")
        for name in args.models:
            print(f"{name[-48:]:<48} {sts_average(name, 'cls', dev):>8.2f} {anisotropy(name, sentences, pairs):>8.3f}")
        return
    tasks = load_tasks(resolve_tasks(None, "test"), data_path, "test")

    rows = []
    for name in args.models:
        started = time.perf_counter()
        row = {
            "model": name,
            "sts_cls": sts_average(name, "cls", tasks),
            "sts_mean": sts_average(name, "mean", tasks),
            "anisotropy_cls": anisotropy(name, sentences, pairs),
        }
        mlm_json = Path(name).parent / "mlm.json"
        if mlm_json.is_file():
            info = json.loads(mlm_json.read_text(encoding="utf-8"))
            row.update(mlm_steps=info["steps"], mlm_loss_first=info["loss_first"], mlm_loss_last=info["loss_last"])
        row["seconds"] = round(time.perf_counter() - started, 1)
        rows.append(row)

    print(f"seven-task STS average (Spearman x100, 'all'); anisotropy = mean [CLS] cosine of {args.pairs} random pairs")
    print(f"{'model':<48} {'STS cls':>8} {'STS mean':>9} {'aniso cls':>10} {'MLM loss':>16}")
    for row in rows:
        loss = (
            f"{row['mlm_loss_first']:.3f}->{row['mlm_loss_last']:.3f}" if row.get("mlm_loss_first") is not None else "-"
        )
        print(
            f"{row['model'][-48:]:<48} {row['sts_cls']:>8.2f} {row['sts_mean']:>9.2f} "
            f"{row['anisotropy_cls']:>10.3f} {loss:>16}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
