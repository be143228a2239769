"""The corpus bank and its faiss index: exact search vs brute force, self-exclusion by row id
and duplicate text, IVF/HNSW validity, and the two encoding spaces on a tiny random BERT."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import close_process_group, make_tiny_training_model

from hardcse.errors import ConfigError
from hardcse.index import CorpusIndex, duplicate_groups, encode_corpus, head_applied

# sentence-transformers is imported lazily (in the fixtures/tests that need it), so the two
# processes of the distributed test start fast.


def _unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute_force(bank: np.ndarray, queries: np.ndarray, k: int, banned: list[set[int]]) -> np.ndarray:
    """Top-k rows by inner product, skipping ``banned[b]`` for query b (plain loops)."""
    out = []
    for b, q in enumerate(queries):
        scores = bank @ q
        ranked = [int(r) for r in np.argsort(-scores, kind="stable") if int(r) not in banned[b]]
        out.append(ranked[:k])
    return np.array(out)


# -- duplicates ------------------------------------------------------------------------------
def test_duplicate_groups_by_identical_text():
    groups = duplicate_groups(["a b", "c", "a b", "d", "c", "a b"])
    assert groups.tolist() == [0, 1, 0, 2, 1, 0]


# -- exact search ----------------------------------------------------------------------------
def test_flat_search_equals_brute_force():
    bank = _unit(300, 16)
    queries = _unit(8, 16, seed=1) * 3.0  # not normalised, as the official queries
    index = CorpusIndex("flat").build(bank)
    scores, ids, vectors = index.search(queries, k=5)
    expected = _brute_force(bank, queries, 5, [set() for _ in queries])
    assert np.array_equal(ids, expected)
    assert np.allclose(scores, np.take_along_axis(queries @ bank.T, expected, axis=1), atol=1e-5)
    assert np.array_equal(vectors, bank[expected])
    assert index.size == 300 and index.dim == 16 and index.built_at_step == 0 and index.refresh_count == 0


def test_self_and_duplicates_are_never_returned():
    bank = _unit(40, 8)
    texts = [f"sentence {i}" for i in range(40)]
    # rows 5, 17 and 33 hold the same text; their vectors are identical too (worst case:
    # they are the query's exact nearest neighbours).
    for r in (17, 33):
        texts[r] = texts[5]
        bank[r] = bank[5]
    index = CorpusIndex("flat", duplicate_group=duplicate_groups(texts)).build(bank)
    rows = np.array([5, 17, 33, 2])
    scores, ids, _ = index.search(bank[rows], k=6, exclude_ids=torch.tensor(rows))
    for b, row in enumerate(rows):
        banned = {5, 17, 33} if row in (5, 17, 33) else {int(row)}
        assert not banned & set(ids[b].tolist())
    banned = [{5, 17, 33}, {5, 17, 33}, {5, 17, 33}, {2}]
    assert np.array_equal(ids, _brute_force(bank, bank[rows], 6, banned))
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first


def test_exclusion_by_row_id_without_groups():
    bank = _unit(20, 4)
    index = CorpusIndex("flat").build(bank)
    _, ids, _ = index.search(bank[[3, 4]], k=19, exclude_ids=np.array([3, 4]))
    assert sorted(ids[0].tolist()) == [r for r in range(20) if r != 3]
    assert sorted(ids[1].tolist()) == [r for r in range(20) if r != 4]


def test_fewer_admissible_rows_than_k_are_padded():
    bank = _unit(4, 3)
    index = CorpusIndex("flat", duplicate_group=duplicate_groups(["x", "y", "x", "z"])).build(bank)
    scores, ids, vectors = index.search(bank[[0]], k=4, exclude_ids=[0])
    assert sorted(ids[0, :2].tolist()) == [1, 3]
    assert ids[0, 2:].tolist() == [-1, -1]
    assert np.isneginf(scores[0, 2:]).all() and not vectors[0, 2:].any()


def test_bad_arguments_are_reported():
    with pytest.raises(ConfigError):
        CorpusIndex("lsh")
    index = CorpusIndex("flat").build(_unit(10, 4))
    with pytest.raises(ValueError):
        index.search(_unit(2, 4), k=3, exclude_ids=[0, 10])
    with pytest.raises(ValueError):
        index.search(_unit(2, 5), k=3)
    with pytest.raises(ConfigError):
        CorpusIndex("flat", duplicate_group=np.zeros(3, dtype=np.int64)).build(_unit(10, 4))


# -- approximate indexes ---------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_return_valid_results(kind):
    rng = np.random.default_rng(3)
    centres = _unit(10, 16, seed=4)
    bank = centres[rng.integers(0, 10, 600)] + 0.15 * rng.standard_normal((600, 16)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    texts = [f"s{i}" for i in range(600)]
    texts[1] = texts[0]
    index = CorpusIndex(kind, duplicate_group=duplicate_groups(texts), nprobe=8, ef_search=64, seed=0)
    index.build(bank.astype(np.float32))
    rows = np.arange(16)
    scores, ids, vectors = index.search(bank[rows], k=7, exclude_ids=rows)
    assert ids.shape == (16, 7) and vectors.shape == (16, 7, 16)
    assert (ids >= 0).all() and (ids < 600).all()
    for b, row in enumerate(rows):
        banned = {0, 1} if row in (0, 1) else {int(row)}
        assert not banned & set(ids[b].tolist())
        assert len(set(ids[b].tolist())) == 7
    assert np.allclose(vectors, bank[ids])
    assert np.all(np.diff(scores, axis=1) <= 1e-5)
    exact = _brute_force(bank, bank[rows], 7, [{0, 1} if r in (0, 1) else {int(r)} for r in rows])
    recall = np.mean([len(set(a) & set(e)) / 7 for a, e in zip(ids.tolist(), exact.tolist(), strict=True)])
    assert recall >= 0.8


def test_rebuild_counts_refreshes_and_replaces_the_bank():
    index = CorpusIndex("hnsw")
    index.build(_unit(50, 8, seed=0), step=0)
    old = index.vectors.copy()
    new = _unit(50, 8, seed=9)
    index.build(new, step=25)
    assert index.refresh_count == 1 and index.built_at_step == 25 and index.build_seconds > 0
    assert np.array_equal(index.vectors, new) and not np.array_equal(index.vectors, old)
    _, ids, _ = index.search(new[[7]], k=1, exclude_ids=None)
    assert ids[0, 0] == 7


# -- encoding spaces -------------------------------------------------------------------------
SENTENCES = [
    "the cat sits on the house",
    "a dog runs in the city",
    "the king of the state",
    "she reads a new book",
    "music and film",
    "the cat sits on the house",
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_training_model(tmp_path_factory.mktemp("tiny") / "bert")


def _manual_cls(model, sentences: list[str]) -> torch.Tensor:
    """Last-layer first-token vector of the HF backbone itself, eval mode (no dropout)."""
    backbone = model[0].auto_model
    tokenizer = model[0].tokenizer
    was = backbone.training
    backbone.eval()
    with torch.no_grad():
        enc = tokenizer(sentences, padding=True, truncation=True, max_length=32, return_tensors="pt")
        cls = backbone(**enc).last_hidden_state[:, 0]
    backbone.train(was)
    return cls


def test_official_bank_is_the_backbone_cls_without_head(tiny_model):
    bank = encode_corpus(tiny_model, SENTENCES, batch_size=4, mode="official", show_progress=False)
    cls = _manual_cls(tiny_model, SENTENCES)
    expected = (cls / cls.norm(dim=1, keepdim=True)).numpy()
    assert bank.dtype == np.float32 and bank.shape == (6, 32)
    assert np.allclose(bank, expected, atol=1e-5)
    # The model's train/eval flags are restored (it was in training mode).
    assert tiny_model.training and all(m.training for m in tiny_model.modules())


def test_refresh_bank_applies_the_head_without_dropout(tiny_model):
    from hardcse.models.head import TrainOnlyHead

    bank = encode_corpus(tiny_model, SENTENCES, batch_size=2, mode="refresh", show_progress=False)
    head = next(m for m in tiny_model if isinstance(m, TrainOnlyHead))
    with torch.no_grad():
        z = torch.tanh(head.linear(_manual_cls(tiny_model, SENTENCES)))
    expected = (z / z.norm(dim=1, keepdim=True)).numpy()
    assert np.allclose(bank, expected, atol=1e-5)
    # Deterministic (no dropout) and the training flags are restored.
    again = encode_corpus(tiny_model, SENTENCES, batch_size=3, mode="refresh", show_progress=False)
    assert np.allclose(bank, again, atol=1e-6)
    assert tiny_model.training
    with pytest.raises(ConfigError):
        encode_corpus(tiny_model, SENTENCES, mode="train")


def test_head_applied_restores_flags(tiny_model):
    from hardcse.models.head import TrainOnlyHead

    tiny_model.eval()
    head = next(m for m in tiny_model if isinstance(m, TrainOnlyHead))
    with head_applied(tiny_model, apply_head=True):
        assert head.training and not tiny_model[0].training
    assert not head.training and not tiny_model.training
    tiny_model.train()


# -- distributed encoding (2 gloo processes on CPU) ------------------------------------------
class _Hasher(torch.nn.Module):
    """A model stand-in: each sentence's vector is a fixed function of its text."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def get_embedding_dimension(self) -> int:
        return 4

    def preprocess(self, texts):
        return {"x": torch.tensor([[len(t), t.count("a") + 1.0, ord(t[0]), 1.0] for t in texts])}

    def forward(self, features):
        return {"sentence_embedding": features["x"].float() * self.w}


def _dist_worker(rank: int, world: int, init_file: str, out_dir: str, texts: list[str]) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        bank = encode_corpus(_Hasher(), texts, batch_size=2, mode="official", show_progress=False)
        np.save(os.path.join(out_dir, f"bank{rank}.npy"), bank)
    finally:
        close_process_group()


@pytest.mark.slow
def test_distributed_encoding_gathers_the_same_full_bank(tmp_path: Path):
    texts = ["a", "bb", "cab", "dddd", "aaeaa", "f", "ga"]  # 7 rows: uneven shards
    torch.multiprocessing.spawn(
        _dist_worker, args=(2, str(tmp_path / "init"), str(tmp_path), texts), nprocs=2, join=True
    )
    single = encode_corpus(_Hasher(), texts, batch_size=3, mode="official", show_progress=False)
    for rank in range(2):
        assert np.allclose(np.load(tmp_path / f"bank{rank}.npy"), single, atol=1e-6)


def test_a_minus_one_row_excludes_nothing():
    bank = _unit(6, 4)
    index = CorpusIndex("flat", duplicate_group=duplicate_groups(["a", "b", "a", "c", "d", "e"])).build(bank)
    _, ids, _ = index.search(bank[[0, 0]], k=6, exclude_ids=np.array([-1, 0]))
    assert ids[0, 0] == 0 and sorted(ids[0].tolist()) == list(range(6))  # -1: nothing excluded
    assert sorted(ids[1, :4].tolist()) == [1, 3, 4, 5] and ids[1, 4:].tolist() == [-1, -1]  # group {0, 2} out
    with pytest.raises(ValueError):
        index.search(bank[[0]], k=2, exclude_ids=[-2])
