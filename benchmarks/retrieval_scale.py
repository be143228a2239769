"""What HSimCSE's per-step corpus retrieval costs at wiki1m scale, and what ANN indexes buy.

A synthetic bank of ``--n`` (default 1,000,000) x 384 float32 unit vectors is generated in
chunks: a mixture of 256 gaussians, each spread over its own random 32-dimensional subspace,
plus isotropic noise (clustered, low intrinsic dimension and overlapping, so approximate
search is not trivially exact; random pairs have cosine ~0, and the script prints the mean
cosine of the exact neighbours). Every "training step" searches 64 perturbed bank
points (HSimCSE's batch) for k=7 neighbours, excluding the query's own row, through
:class:`hardcse.index.CorpusIndex` (so the timing includes the exclusion and the neighbour
vectors, i.e. the real per-step cost). Reported per index: build seconds, median search ms
per step over ``--steps`` steps, recall@7 against the exact index, and the search time as a
percentage of a 2.5 s training step (the CPU preset's step).

    .venv/bin/python benchmarks/retrieval_scale.py               # 1M x 384 (~1.5 GB bank)
    .venv/bin/python benchmarks/retrieval_scale.py --n 100000    # quicker
"""

from __future__ import annotations

import argparse
import gc
import math
import platform
import statistics
import time

import faiss
import numpy as np

from hardcse.index import CorpusIndex

STEP_SECONDS = 2.5
BATCH = 64
K = 7


def synthetic_bank(n: int, d: int, clusters: int = 256, sub_dim: int = 32, seed: int = 0) -> np.ndarray:
    """Unit vectors from a mixture of gaussians with low-dimensional, overlapping clusters."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    bases = rng.standard_normal((clusters, sub_dim, d)).astype(np.float32) / math.sqrt(d)
    bank = np.empty((n, d), dtype=np.float32)
    chunk = 50_000
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        m = stop - start
        label = rng.integers(0, clusters, m)
        coef = rng.standard_normal((m, sub_dim)).astype(np.float32) * 0.3
        block = centres[label] + np.einsum("ms,msd->md", coef, bases[label])
        block += rng.standard_normal((m, d)).astype(np.float32) * (0.3 / math.sqrt(d))
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        bank[start:stop] = block
    return bank


def query_batches(bank: np.ndarray, steps: int, seed: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """``steps`` batches of 64 perturbed bank rows (queries) and their row ids (to exclude)."""
    rng = np.random.default_rng(seed)
    n, d = bank.shape
    out = []
    for _ in range(steps):
        rows = rng.choice(n, size=BATCH, replace=False)
        noise = rng.standard_normal((BATCH, d)).astype(np.float32) * (0.05 / math.sqrt(d))
        out.append((np.ascontiguousarray(bank[rows] + noise), rows.astype(np.int64)))
    return out


def run(index: CorpusIndex, batches: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, list[np.ndarray]]:
    """Median per-step search seconds (first step excluded as warm-up) and the ids found."""
    times, found = [], []
    for queries, rows in batches:
        started = time.perf_counter()
        _, ids, _ = index.search(queries, K, exclude_ids=rows)
        times.append(time.perf_counter() - started)
        found.append(ids)
    return statistics.median(times[1:] if len(times) > 2 else times), found


def recall(found: list[np.ndarray], exact: list[np.ndarray]) -> float:
    hits = 0
    for a, e in zip(found, exact, strict=True):
        for row_a, row_e in zip(a, e, strict=True):
            hits += len(set(row_a.tolist()) & set(row_e.tolist()))
    return hits / (K * BATCH * len(exact))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="bank rows (default 1,000,000)")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--steps", type=int, default=50, help="search steps per index (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="faiss OpenMP threads (default 1)")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--ef-search", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=80)
    parser.add_argument("--skip-hnsw", action="store_true")
    args = parser.parse_args()

    faiss.omp_set_num_threads(args.threads)
    print(
        f"# retrieval_scale: n={args.n:,} d={args.dim} batch={BATCH} k={K} steps={args.steps} "
        f"faiss={faiss.__version__} omp_threads={args.threads} cpu={platform.processor() or platform.machine()}"
    )
    started = time.perf_counter()
    bank = synthetic_bank(args.n, args.dim)
    print(f"# bank generated in {time.perf_counter() - started:.1f} s ({bank.nbytes / 2**30:.2f} GiB float32)")
    batches = query_batches(bank, args.steps)

    rows: list[tuple[str, float, float, float]] = []
    exact_index = CorpusIndex("flat").build(bank)
    exact_ms, exact = run(exact_index, batches)
    scores, _, _ = exact_index.search(batches[0][0], K, exclude_ids=batches[0][1])
    means = ", ".join(f"{v:.3f}" for v in scores.mean(axis=0))
    print(f"# exact neighbour cosines, mean by rank 1..{K}: {means}")
    rows.append(("flat (exact IndexFlatIP)", exact_index.build_seconds, exact_ms, 1.0))
    del exact_index
    gc.collect()

    ivf = CorpusIndex("ivf", nprobe=args.nprobe[0], seed=0)
    ivf.build(bank)
    nlist = ivf.index.nlist
    for i, nprobe in enumerate(args.nprobe):
        ivf.nprobe = nprobe
        ms, found = run(ivf, batches)
        build = ivf.build_seconds if i == 0 else 0.0
        rows.append((f"ivf nlist={nlist} nprobe={nprobe}", build, ms, recall(found, exact)))
    del ivf
    gc.collect()

    if not args.skip_hnsw:
        hnsw = CorpusIndex("hnsw", hnsw_m=args.hnsw_m, ef_construction=args.ef_construction)
        hnsw.build(bank)
        for i, ef in enumerate(args.ef_search):
            hnsw.ef_search = ef
            ms, found = run(hnsw, batches)
            build = hnsw.build_seconds if i == 0 else 0.0
            rows.append(
                (f"hnsw M={args.hnsw_m} efC={args.ef_construction} efSearch={ef}", build, ms, recall(found, exact))
            )
        del hnsw
        gc.collect()

    print()
    print("| index | build s | search ms/step (median) | recall@7 vs exact | % of a 2.5 s step |")
    print("|---|---|---|---|---|")
    for name, build, seconds, rec in rows:
        build_cell = f"{build:.1f}" if build else "(same index)"
        pct = 100 * seconds / STEP_SECONDS
        print(f"| {name} | {build_cell} | {1000 * seconds:.1f} | {rec:.3f} | {pct:.2f}% |")
    good = [r for r in rows[1:] if r[3] >= 0.9 and 100 * r[2] / STEP_SECONDS <= 5.0]
    verdict = "met by " + ", ".join(r[0] for r in good) if good else "not met by any configuration tried"
    print(f"\nTarget (approximate index at recall@7 >= 0.9 costing <= 5% of a step): {verdict}.")
    print(f"# total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
