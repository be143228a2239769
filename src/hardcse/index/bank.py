"""The corpus embedding bank and its faiss index (build, refresh, search with self-exclusion).

HSimCSE looks up, for every anchor of a training batch, its nearest
sentences in the whole training corpus. This module holds that corpus "memory bank":

* the bank's vectors come from :func:`hardcse.models.corpus_encoding.encode_corpus` (the model-aware
  encoding lives with the models; this layer only stores and searches vectors; ``encode_corpus``
  and ``head_applied`` are still importable from :mod:`hardcse.index` for earlier code).
* :class:`CorpusIndex` wraps a faiss inner-product index over the bank: exact ``IndexFlatIP``
  (default; exact MIPS = cosine ranking on unit vectors), ``IndexIVFFlat`` (nlist ~ 4 sqrt(n),
  ``nprobe``) or ``IndexHNSWFlat`` (``M``, ``efSearch``) for large corpora.
  :meth:`CorpusIndex.search` excludes, for each query, the query's own corpus row **and every
  exact duplicate of its text** (rows sharing a :func:`duplicate_groups` id), which the official
  code tried to do by comparing token ids and got wrong.

Scale (``benchmarks/retrieval_scale.py``, 1M x 384 synthetic bank, 64 queries, k=7, one faiss
thread on a busy 2-core CPU): exact search 5.5 s per step; IVF (nlist 4000) 27 ms at nprobe 8
(recall@7 0.92) and 76 ms at nprobe 32 (recall 1.00); HNSW (M 32) needed efSearch > 128 for
recall 0.9 on that data. For corpora of ~10^6 sentences on CPU use ``ivf``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import faiss
import numpy as np
from torch import Tensor

from hardcse.errors import ConfigError

INDEX_KINDS = ("flat", "ivf", "hnsw")


# -- duplicates ------------------------------------------------------------------------------
def duplicate_groups(texts: Sequence[str]) -> np.ndarray:
    """Group id per corpus row: rows with identical text share a group (int64, n).

    Groups are numbered in order of first appearance, so the result is deterministic.
    """
    first: dict[str, int] = {}
    groups = np.empty(len(texts), dtype=np.int64)
    for row, text in enumerate(texts):
        groups[row] = first.setdefault(text, len(first))
    return groups


# -- the index -------------------------------------------------------------------------------
class _OwnedArray(np.ndarray):
    """A numpy view of faiss-owned memory that keeps the owning faiss index alive."""

    _owner: Any = None


def _storage_view(index: Any, n: int, d: int) -> np.ndarray:
    """Zero-copy (n x d) view of the float vectors held by a flat (or HNSW-flat) faiss index."""
    flat = faiss.downcast_index(index.storage) if isinstance(index, faiss.IndexHNSW) else index
    view = faiss.rev_swig_ptr(flat.get_xb(), n * d).reshape(n, d).view(_OwnedArray)
    view._owner = index
    view.flags.writeable = False
    return np.asarray(view)


def bank_fingerprint(vectors: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Cheap float64 summary of a bank: ``[n, d, sum(v), sum(v * w)]`` with a fixed ``w``.

    Used to check, on resume, that a rebuilt bank is the one the run started with.
    """
    n, d = vectors.shape
    w = np.cos(np.arange(d, dtype=np.float64) * 0.7 + 0.3)
    total = 0.0
    weighted = 0.0
    for s in range(0, n, chunk):
        block = vectors[s : s + chunk].astype(np.float64)
        total += float(block.sum())
        weighted += float((block @ w).sum())
    return np.array([n, d, total, weighted], dtype=np.float64)


class CorpusIndex:
    """A faiss inner-product index over an L2-normalised corpus bank, with self-exclusion.

    Args:
        kind: ``flat`` (exact ``IndexFlatIP``), ``ivf`` (``IndexIVFFlat``, inner product) or
            ``hnsw`` (``IndexHNSWFlat`` with ``METRIC_INNER_PRODUCT``).
        duplicate_group: group id per corpus row (see :func:`duplicate_groups`); rows in the
            query row's group are excluded from its results. ``None``: each row its own group.
        nlist: IVF lists; ``None`` -> ``round(4 * sqrt(n))`` (at least 1, at most n).
        nprobe: IVF lists visited per query.
        ivf_train_size: IVF k-means training sample (``None`` -> ``min(n, 64 * nlist)``).
        hnsw_m: HNSW graph degree M.
        ef_construction / ef_search: HNSW build / search beam widths (``ef_search`` is raised
            to the number of requested hits when smaller).
        seed: seed of the IVF training sample and k-means.

    Attributes ``build_seconds`` (last build), ``refresh_count`` (builds after the first) and
    ``built_at_step`` (training step of the last build) describe the bank's freshness.
    """

    def __init__(
        self,
        kind: str = "flat",
        duplicate_group: np.ndarray | None = None,
        nlist: int | None = None,
        nprobe: int = 16,
        ivf_train_size: int | None = None,
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 64,
        seed: int = 0,
    ) -> None:
        if kind not in INDEX_KINDS:
            raise ConfigError(f"unknown index kind '{kind}'; choose one of {', '.join(INDEX_KINDS)}.")
        self.kind = kind
        self.duplicate_group = None if duplicate_group is None else np.asarray(duplicate_group, dtype=np.int64)
        self.nlist = nlist
        self.nprobe = nprobe
        self.ivf_train_size = ivf_train_size
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.seed = seed
        self.index: Any = None
        self._vectors: np.ndarray | None = None
        self._group_size: np.ndarray | None = None
        self.fingerprint: np.ndarray | None = None
        self.build_seconds = 0.0
        self.build_count = 0
        self.built_at_step = -1
        self.last_search_seconds = 0.0
        if self.duplicate_group is not None:
            self._group_size = np.bincount(self.duplicate_group)

    # -- properties --------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return 0 if self._vectors is None else int(self._vectors.shape[0])

    @property
    def dim(self) -> int:
        return 0 if self._vectors is None else int(self._vectors.shape[1])

    @property
    def vectors(self) -> np.ndarray:
        """The bank (n x d float32, read-only; for flat/HNSW a view of faiss' own storage)."""
        if self._vectors is None:
            raise RuntimeError("the corpus index has not been built yet; call build() first.")
        return self._vectors

    @property
    def refresh_count(self) -> int:
        return max(self.build_count - 1, 0)

    # -- build -------------------------------------------------------------------------------
    def build(self, vectors: np.ndarray, kind: str | None = None, step: int = 0) -> CorpusIndex:
        """(Re)build the index over ``vectors`` (n x d float32, L2-normalised rows).

        Flat and HNSW keep a single copy of the bank (faiss' storage, exposed read-only through
        :attr:`vectors`); IVF keeps ``vectors`` as given (converted to contiguous float32).
        """
        if kind is not None:
            if kind not in INDEX_KINDS:
                raise ConfigError(f"unknown index kind '{kind}'; choose one of {', '.join(INDEX_KINDS)}.")
            self.kind = kind
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] == 0:
            raise ConfigError(f"the corpus bank must be a non-empty n x d matrix, got shape {vectors.shape}.")
        n, d = vectors.shape
        if self.duplicate_group is not None and len(self.duplicate_group) != n:
            raise ConfigError(
                f"the corpus bank has {n} rows but the duplicate groups cover {len(self.duplicate_group)}; "
                "encode the same corpus the groups were built from."
            )
        started = time.perf_counter()
        if self.kind == "flat":
            index = faiss.IndexFlatIP(d)
            index.add(vectors)
            stored = _storage_view(index, n, d)
        elif self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.ef_construction
            index.add(vectors)
            stored = _storage_view(index, n, d)
        else:
            nlist = self.nlist or max(1, round(4 * math.sqrt(n)))
            nlist = min(nlist, n)
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(
                quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT
            )  # faiss references the quantizer
            index.cp.seed = self.seed
            train_size = min(n, self.ivf_train_size or 64 * nlist)
            if train_size < n:
                rows = np.sort(np.random.default_rng(self.seed).choice(n, size=train_size, replace=False))
                sample = vectors[rows]
            else:
                sample = vectors
            index.train(sample)
            index.add(vectors)
            stored = vectors
        self.build_seconds = time.perf_counter() - started
        self.index = index
        self._vectors = stored
        self.fingerprint = bank_fingerprint(stored)
        self.build_count += 1
        self.built_at_step = int(step)
        return self

    # -- search ------------------------------------------------------------------------------
    def _set_search_params(self, kk: int) -> None:
        if self.kind == "ivf":
            self.index.nprobe = min(self.nprobe, self.index.nlist)
        elif self.kind == "hnsw":
            self.index.hnsw.efSearch = max(self.ef_search, kk)

    def search(
        self, queries: np.ndarray | Tensor, k: int, exclude_ids: np.ndarray | Tensor | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``k`` best corpus rows by inner product for each query, best first.

        ``exclude_ids[b]`` is the corpus row of query ``b`` (or ``None``: no exclusion; a row of
        -1: nothing to exclude for that query, e.g. a sentence missing from a sampled bank); that
        row and every row with the same text (same duplicate group) never appear in query ``b``'s
        results. faiss is asked for ``k + g`` hits, ``g`` = the largest duplicate group among the
        batch's rows, then excluded hits are dropped and the first ``k`` survivors kept
        (vectorised, no per-row loop). A row with fewer than ``k`` admissible hits is padded
        with id ``-1``, score ``-inf`` and a zero vector.

        Returns ``(scores B x k float32, ids B x k int64, vectors B x k x d float32)``.
        """
        if self.index is None or self._vectors is None:
            raise RuntimeError("the corpus index has not been built yet; call build() first.")
        if isinstance(queries, Tensor):
            queries = queries.detach().float().cpu().numpy()
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must be B x {self.dim}, got shape {queries.shape}.")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}.")
        b = queries.shape[0]
        n = self.size
        own: np.ndarray | None = None
        extra = 0
        if exclude_ids is not None:
            if isinstance(exclude_ids, Tensor):
                exclude_ids = exclude_ids.detach().cpu().numpy()
            rows = np.asarray(exclude_ids, dtype=np.int64).reshape(-1)
            if rows.shape[0] != b:
                raise ValueError(f"exclude_ids must hold one row id per query ({b}), got {rows.shape[0]}.")
            if rows.size and (rows.min() < -1 or rows.max() >= n):
                raise ValueError(f"exclude_ids must be corpus rows in [0, {n}) or -1, got {rows.min()}..{rows.max()}.")
            present = rows >= 0
            if self.duplicate_group is not None:
                # -2 never equals a group id, so a -1 row excludes nothing.
                own = np.where(present, self.duplicate_group[np.where(present, rows, 0)], -2)
                extra = int(self._group_size[own[present]].max()) if present.any() else 0
            else:
                own = np.where(present, rows, -2)
                extra = 1
        kk = min(k + extra, n)
        self._set_search_params(kk)
        started = time.perf_counter()
        scores, ids = self.index.search(queries, kk)
        valid = ids >= 0
        if own is not None:
            hit_group = self.duplicate_group[np.where(valid, ids, 0)] if self.duplicate_group is not None else ids
            valid &= hit_group != own[:, None]
        # Stable sort puts admissible hits first, keeping faiss' score order among them.
        order = np.argsort(~valid, axis=1, kind="stable")[:, :k]
        ids = np.take_along_axis(ids, order, axis=1)
        scores = np.take_along_axis(scores, order, axis=1)
        keep = np.take_along_axis(valid, order, axis=1)
        if kk < k:  # fewer corpus rows than k: pad
            pad = k - kk
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, pad)))
            keep = np.pad(keep, ((0, 0), (0, pad)), constant_values=False)
        ids = np.where(keep, ids, -1).astype(np.int64)
        scores = np.where(keep, scores, -np.inf).astype(np.float32)
        vectors = self._vectors[np.where(keep, ids, 0)]
        vectors[~keep] = 0.0
        self.last_search_seconds = time.perf_counter() - started
        return scores, ids, vectors
