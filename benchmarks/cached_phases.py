"""Where the time of a cached step (``mini_batch_size``) goes: one short trainer run of a ``perf.py`` contender
with the loss's phases timed, printed per step and per sentence.

Phases: the encoder passes without a graph (step 1 of a cached step), the objective, the encoder
passes with a graph (an uncached step's forward, or the replayed and kept passes of a cached step),
every ``torch.autograd.backward`` call (the trainer's outer backward contains the replay, which
runs the inner ones), the whole replay hook, and the heap trim. Run each contender in its own
process, with nothing else on the machine, e.g.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/cached_phases.py simcse 12
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/cached_phases.py simcse+batch512+cached64 6

The wrappers add a few microseconds per call; the contender names are ``perf.py``'s.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import perf
import torch
from common import data_dir

from hardcse.data.corpus import read_corpus
from hardcse.objectives import base, cached, encoding

SECONDS: dict[str, list[float]] = defaultdict(list)


def _timed(key, fn):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SECONDS[key].append(time.perf_counter() - t0)

    return wrapper


def _instrument() -> None:
    """Wrap the methods of the encoding strategy, the objective and the cached step in timers (for
    every instance, in this process only), and ``torch.autograd.backward``."""
    encode = encoding.TwoViewEncoder.encode_rows

    def encode_rows(self, model, features, rows=None):
        t0 = time.perf_counter()
        out = encode(self, model, features, rows)
        SECONDS["encode, graph" if torch.is_grad_enabled() else "encode, no graph"].append(time.perf_counter() - t0)
        return out

    encoding.TwoViewEncoder.encode_rows = encode_rows
    base.HardCSELoss.compute_loss_from_embeddings = _timed("objective", base.HardCSELoss.compute_loss_from_embeddings)
    cached._Replay.__call__ = _timed("replay hook (all)", cached._Replay.__call__)
    cached.CachedStep.release_memory = _timed("heap trim", cached.CachedStep.release_memory)
    torch.autograd.backward = _timed("autograd.backward", torch.autograd.backward)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("contender", help="a perf.py contender, e.g. simcse or simcse+batch512+cached64")
    parser.add_argument("steps", type=int)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    _instrument()
    sentences = read_corpus(["corpus/wikipedia_vital_articles_en.sentences.txt"], data_dir())
    timer = perf.StepTimer()
    with tempfile.TemporaryDirectory(prefix="bench-phases-") as tmp:
        median, _ = perf.time_recipe(args.contender, sentences, args.steps, 42, Path(tmp), timer=timer)
    batch = perf.parse_contender(args.contender)[1].get("batch_size", 64)
    steps = len(timer.times)
    print(f"{args.contender}: median step {median:.3f} s = {1000 * median / batch:.2f} ms per sentence")
    print(f"steps (s): {', '.join(f'{t:.2f}' for t in timer.times)}")
    print("| phase | calls per step | s per step | ms per sentence |\n|:--|--:|--:|--:|")
    for key, values in SECONDS.items():
        per_step = sum(values) / steps
        print(f"| {key} | {len(values) / steps:.1f} | {per_step:.3f} | {1000 * per_step / batch:.2f} |")


if __name__ == "__main__":
    main()
