"""Cached (GradCache-style) contrastive steps: the same loss and gradients as an uncached step.

Dropout is on (hardcse's fast CPU dropout, as in training), so the re-encoded mini-batches must
replay the first pass's masks. The references:

* one mini-batch (``mini_batch_size`` = batch): the uncached step itself draws the same masks
  from the same seed, so loss and every gradient must agree (also under bf16 autocast, which the
  replay must re-enter);
* several mini-batches: an ordinary step with one graph over the whole batch whose views are
  encoded in the same mini-batches in the same order from the same seed (so with the same masks),
  then the loss and one ``backward``;
* no dropout, several mini-batches, float64: the plain one-pass uncached step (the cut into
  length-sorted mini-batches changes no sum, up to rounding).

Tolerance: per parameter ``||g - g_ref|| <= 1e-5 ||g_ref||``, except for the attention key
biases, whose exact gradient is zero (a softmax is invariant to adding ``q . b`` to every
logit of a row), so only rounding remains: those are held to ``1e-5`` of the largest gradient.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import WORDS, close_process_group, make_tiny_training_model

from hardcse.errors import ConfigError
from hardcse.models.dropout import enable_fast_dropout
from hardcse.objectives.base import HardCSELoss
from hardcse.objectives.cached import CachedStep, split_rows
from hardcse.objectives.encoding import TwoViewEncoder

# The default settings of a cached step (what a loss given only mini_batch_size uses).
ROWS_PER_SENTENCE = CachedStep(1).rows_per_sentence
KEPT_PASSES = CachedStep(1).kept_passes

BATCH = 12
RECIPES = ("simcse", "clusterns-before", "clusterns-after", "hsimcse")


def sentences(n: int, seed: int = 0) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(2, 14, (1,), generator=g))
        out.append(" ".join(WORDS[i] for i in torch.randint(0, 60, (length,), generator=g).tolist()))
    return out


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    model = make_tiny_training_model(tmp_path_factory.mktemp("tiny") / "bert")
    enable_fast_dropout(model)
    return model


def parts_for(recipe: str, model, corpus: list[str]) -> list:
    """Fresh parts (their own state) for ``recipe``; ClusterNS with K = 4."""
    if recipe.startswith("clusterns"):
        from hardcse.objectives.clusterns import ClusterNSConfig, build_clusterns

        # theta 1.0 starts the clustering at step 0 (centroids used from step 1); -1.0 never does.
        theta = 1.0 if recipe == "clusterns-after" else -1.0
        return build_clusterns(ClusterNSConfig(k=4, theta=theta), dim=model.get_embedding_dimension(), batch_size=BATCH)
    if recipe == "hsimcse":
        from hardcse.objectives.hsimcse import HSimCSEConfig, build_hsimcse

        parts, _ = build_hsimcse(HSimCSEConfig(), model, corpus, batch_size=16, show_progress=False)
        return parts
    return []


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def cached_step(loss: HardCSELoss, features: dict, labels: torch.Tensor, seed: int):
    """One training step as the trainer runs it: the components' sum, back-propagated."""
    loss.model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    out = loss([dict(features)], labels)
    total = torch.stack(list(out.values())).sum()
    total.backward()
    return float(total.detach()), {k: float(v.detach()) for k, v in out.items()}, grads(loss.model)


def graph_step(loss: HardCSELoss, features: dict, labels: torch.Tensor, seed: int, chunk_rows: int | None):
    """The uncached reference: one graph over the whole batch. With ``chunk_rows`` its 2N rows are
    encoded in the cached step's mini-batches (length-sorted, that many rows) in the same order."""
    loss.model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    n = features["input_ids"].shape[0]
    if chunk_rows is None:
        z1, z2 = loss.encoder.encode_two_views(loss.model, dict(features))
    else:
        doubled = {k: torch.cat([v, v]) if torch.is_tensor(v) else v for k, v in features.items()}
        mask = doubled["attention_mask"]
        chunks = split_rows(mask, 2 * n, chunk_rows, pads_right=True)
        pieces = [loss.encoder.encode_rows(loss.model, doubled, rows) for rows in chunks]
        emb = torch.zeros(2 * n, pieces[0].shape[1]).index_put((torch.cat(chunks),), torch.cat(pieces).float())
        z1, z2 = emb[:n], emb[n:]
    out = loss.compute_loss_from_embeddings(z1, z2, labels.long())
    total = torch.stack(list(out.values())).sum()
    total.backward()
    return float(total.detach()), {k: float(v.detach()) for k, v in out.items()}, grads(loss.model)


def assert_same_gradients(got: dict, ref: dict, rtol: float = 1e-5) -> None:
    assert got.keys() == ref.keys() and len(ref) > 30
    largest = max(float(v.norm()) for v in ref.values())
    for name, want in ref.items():
        diff = float((got[name] - want).norm())
        floor = largest if name.endswith("attention.self.key.bias") else float(want.norm())
        assert diff <= rtol * floor, (name, diff, float(want.norm()))


def batch(model, n: int = BATCH, seed: int = 1):
    texts = sentences(n, seed)
    return model.preprocess(texts), torch.arange(n)


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("length_chunks", [1, 2])
def test_cached_step_equals_one_graph_over_the_same_minibatches(model, recipe, length_chunks):
    model.train()
    corpus = sentences(40, seed=5)
    features, labels = batch(model)
    encoder = TwoViewEncoder(length_chunks=length_chunks)
    cached = HardCSELoss(model, parts_for(recipe, model, corpus), encoder=encoder, cached_step=CachedStep(4))
    plain = HardCSELoss(model, parts_for(recipe, model, corpus), encoder=encoder)
    for step in range(2):  # ClusterNS "after": step 0 starts the clustering, step 1 uses centroids
        total, parts, got = cached_step(cached, features, labels, seed=10 + step)
        rows = 4 * ROWS_PER_SENTENCE  # the cached step's mini-batches of 4 sentences
        ref_total, ref_parts, ref = graph_step(plain, features, labels, seed=10 + step, chunk_rows=rows)
        assert parts.keys() == ref_parts.keys()
        assert abs(total - ref_total) <= 1e-6 * abs(ref_total)
        assert_same_gradients(got, ref)
        assert cached.last_diagnostics.keys() == plain.last_diagnostics.keys()
    # Every part ran exactly once per step: the same step counter and clustering state.
    assert int(cached.step) == int(plain.step) == 2
    if recipe.startswith("clusterns"):
        a, b = cached.parts[0].cluster, plain.parts[0].cluster
        assert bool(a.started) == (recipe == "clusterns-after") == bool(b.started)
        assert torch.equal(a.centroids, b.centroids)
        assert "bml" in parts
    if recipe == "clusterns-after":
        assert cached.last_diagnostics["cluster_started"] == 1.0 and cached.last_diagnostics["hard_negative_cos"] != 0
    if recipe == "hsimcse":
        assert "quad" in parts and cached.last_diagnostics["p_mean"] == plain.last_diagnostics["p_mean"]


@pytest.mark.parametrize("kept", [0, 2, 5])
def test_kept_first_pass_graphs_give_the_same_gradients(model, kept):
    # 0: every pass replayed; 2: the last two keep their first-pass graph; 5: more than there are
    # passes (6 of 24 rows: 4), so all but one (the replayed last pass carries DDP's sync).
    model.train()
    corpus = sentences(40, seed=5)
    features, labels = batch(model)
    settings, encoder = CachedStep(6, kept_passes=kept), TwoViewEncoder(length_chunks=2)
    cached = HardCSELoss(model, parts_for("clusterns-after", model, corpus), encoder=encoder, cached_step=settings)
    plain = HardCSELoss(model, parts_for("clusterns-after", model, corpus), encoder=encoder)
    for step in range(2):
        total, _, got = cached_step(cached, features, labels, seed=20 + step)
        ref_total, _, ref = graph_step(plain, features, labels, seed=20 + step, chunk_rows=6 * ROWS_PER_SENTENCE)
        assert abs(total - ref_total) <= 1e-6 * abs(ref_total)
        assert_same_gradients(got, ref)


@pytest.mark.parametrize("bf16", [False, True])
def test_one_minibatch_equals_the_uncached_step(model, bf16):
    # The same seed draws the same masks in both; the replay must restore them and the autocast.
    model.train()
    features, labels = batch(model)
    parts = {}
    for name, size in (("plain", None), ("cached", 2 * BATCH)):  # both views' rows in one pass
        step = None if size is None else CachedStep(size)
        loss = HardCSELoss(model, encoder=TwoViewEncoder(length_chunks=2), cached_step=step)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model.zero_grad(set_to_none=True)
            torch.manual_seed(3)
            out = loss([dict(features)], labels)
            total = torch.stack(list(out.values())).sum()
        total.backward()  # outside autocast, as the trainer
        parts[name] = (float(total.detach()), grads(model))
    assert parts["cached"][0] == pytest.approx(parts["plain"][0], rel=1e-6)
    assert_same_gradients(parts["cached"][1], parts["plain"][1])


def test_replay_reproduces_every_minibatch(model):
    # The re-encoded embeddings are the first pass's (same dropout masks), and dropout is active.
    model.train()
    features, labels = batch(model)
    loss = HardCSELoss(model, encoder=TwoViewEncoder(length_chunks=2), cached_step=CachedStep(6))
    seen = []
    encode = loss.encoder.encode_rows

    def recording(m, f, rows=None):
        emb = encode(m, f, rows)
        seen.append(emb.detach().clone())
        return emb

    loss.encoder.encode_rows = recording
    cached_step(loss, features, labels, seed=4)
    # 24 rows (12 sentences x 2 views) in mini-batches of 6 rows: 4 first passes, then the replay
    # of all but the last KEPT_PASSES ones (their first-pass graph is back-propagated instead).
    assert KEPT_PASSES >= 1 and len(seen) == 4 + 4 - KEPT_PASSES
    first, second = seen[:4], seen[4:]
    for a, b in zip(first[: len(second)], second, strict=True):
        assert torch.equal(a, b)
    z1, z2 = loss.encoder.encode_two_views(model, dict(features))
    assert not torch.allclose(z1, z2)  # the two views differ: dropout is on


def test_cached_equals_one_pass_without_dropout(model):
    # Several length-sorted mini-batches vs the plain one-pass step; float64 so only the order of
    # sums could differ (float32 rounding of a different cut is ~2e-5, as with length_chunks).
    model.eval().double()
    try:
        features, labels = batch(model, n=16)
        for size in (1, 5):
            cached = HardCSELoss(model, cached_step=CachedStep(size))
            plain = HardCSELoss(model)
            total, _, got = cached_step(cached, features, labels, seed=0)
            ref_total, _, ref = graph_step(plain, features, labels, seed=0, chunk_rows=None)
            assert total == pytest.approx(ref_total, rel=1e-9)
            assert_same_gradients(got, ref, rtol=1e-9)
    finally:
        model.float().train()


def test_evaluation_runs_without_a_graph(model):
    model.eval()
    features, labels = batch(model)
    loss = HardCSELoss(model, cached_step=CachedStep(4)).eval()
    with torch.no_grad():
        out = loss([dict(features)], labels)
    ref = HardCSELoss(model).eval()([dict(features)], labels)
    assert float(out["infonce"]) == pytest.approx(float(ref["infonce"].detach()), rel=1e-5)
    assert int(loss.step) == 0
    model.train()


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, -3, 65])
def test_bad_minibatch_size_is_one_sentence(size):
    import hardcse

    with pytest.raises(ConfigError) as err:
        hardcse.make_config(preset="cpu", mini_batch_size=size).validate()
    message = str(err.value)
    assert "mini_batch_size" in message and str(size) in message and message.count(". ") == 0


def test_batch_smaller_than_k_with_caching_is_refused(model):
    import hardcse
    from hardcse.training.run import build_objective

    # K = 32 (cpu preset) > 16 sentences: mini-batches of 8 do not change what the clustering needs.
    config = hardcse.TrainConfig.from_dict(
        {**hardcse.make_config(preset="cpu", recipe="clusterns").to_dict(), "batch_size": 16, "mini_batch_size": 8}
    )
    with pytest.raises(ConfigError) as err:
        config.validate()
    assert "K=32" in str(err.value) and str(err.value).count(". ") == 0
    with pytest.raises(ConfigError) as err:
        build_objective(config, model, sentences(20), show_progress=False)  # the loss's own check
    message = str(err.value)
    assert "K=32" in message and "mini_batch_size" in message and message.count(". ") == 0


@pytest.mark.slow
def test_cli_refuses_zero_and_leaves_nothing(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "hardcse", "train", "--set", "mini_batch_size=0", "--output", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode != 0
    assert "mini_batch_size" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


# -- two processes -----------------------------------------------------------------------------
@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    """2 gloo processes x 6 sentences, cached in mini-batches of 2, DDP-wrapped as the trainer
    does, give every parameter the gradient of one uncached process x 12 (dropout off, so both
    draw nothing; float64, so the different cut of the batch leaves no float32 rounding; SimCSE
    and ClusterNS after its trigger, two steps each)."""
    model = make_tiny_training_model(tmp_path / "bert")
    features, labels = batch(model)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__]
    proc = subprocess.run([*cmd, str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model.eval().double()  # no dropout, float64, as the workers
    for recipe in ("simcse", "clusterns-after"):
        loss = HardCSELoss(model, parts_for(recipe, model, []))
        for step in range(2):
            ref_total, _, ref = graph_step(loss, features, labels, seed=0, chunk_rows=None)
            got = torch.load(tmp_path / f"{recipe}-{step}.pt")
            assert got["total"] == pytest.approx(ref_total, rel=1e-5)
            assert_same_gradients(got["grads"], ref)
        assert json.loads((tmp_path / f"{recipe}-steps.json").read_text()) == [int(loss.step)] * 2


def _worker(root: Path) -> None:
    from torch.nn.parallel import DistributedDataParallel

    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    torch.set_num_threads(1)
    from hardcse.models.representation import Pooled

    torch.manual_seed(1)  # the head's initialisation, as make_tiny_training_model
    model = Pooled("cls").build(str(root / "bert"), max_seq_length=32, mlp_head=True)
    model.eval().double()
    features, labels = batch(model)
    half = BATCH // 2
    # This process's sentences, cut to their longest row, as the collator pads a per-process batch.
    rows = slice(rank * half, (rank + 1) * half)
    width = int(features["attention_mask"][rows].sum(dim=1).max())
    mine = {k: v[rows, :width] if torch.is_tensor(v) else v for k, v in features.items()}
    ddp = DistributedDataParallel(model, find_unused_parameters=True)
    for recipe in ("simcse", "clusterns-after"):
        loss = HardCSELoss(ddp, parts_for(recipe, model, []), cached_step=CachedStep(2))
        for step in range(2):
            model.zero_grad(set_to_none=True)
            out = loss([dict(mine)], labels[rank * half : (rank + 1) * half])
            total = torch.stack(list(out.values())).sum()
            total.backward()
            if rank == 0:
                torch.save({"total": float(total.detach()), "grads": grads(model)}, root / f"{recipe}-{step}.pt")
        steps = [None] * 2
        torch.distributed.all_gather_object(steps, int(loss.step))
        if rank == 0:
            (root / f"{recipe}-steps.json").write_text(json.dumps(steps))
    del loss, ddp  # DDP's reducer holds the group: release it first
    gc.collect()
    close_process_group()


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))


# -- through the trainer -----------------------------------------------------------------------
@pytest.mark.slow
def test_trainer_run_logs_components_and_resumes_exactly(tmp_path, data_dir):
    """A cached ClusterNS run on sentence-transformers' trainer (dropout on, clustering started at
    step 0): every step logs the loss and its components, and a run resumed from its step-4
    checkpoint (model, optimiser, RNG, clustering state) repeats the uninterrupted run's losses."""
    import shutil

    from helpers import make_tiny_bert

    import hardcse
    from hardcse.training.run import train

    bert = make_tiny_bert(tmp_path / "bert")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(sentences(200, seed=3)) + "\n", encoding="utf-8")
    values = dict(
        recipe="clusterns",
        model=str(bert),
        corpus=[str(corpus)],
        steps=8,
        eval_steps=4,
        batch_size=16,
        mini_batch_size=4,
        length_chunks=2,
        lr=5e-4,
        data_dir=str(data_dir),
        eval_batch_size=256,
        test_tasks=["STSBenchmark"],
        save_total_limit=10,
        clusterns={"k": 4, "theta": 1.0},
    )
    full = tmp_path / "full"
    config = hardcse.make_config(**values, output=str(full))
    reference = train(config, show_progress=False)
    steps = [e for e in reference["history"] if "loss" in e]
    assert [e["step"] for e in steps] == list(range(1, 9))
    weight = config.clusterns["bml_weight"]
    for e in steps:  # the trainer logs the loss rounded to 4 digits; the diagnostic is the unweighted BML
        assert e["loss"] == pytest.approx(e["infonce"] + e["bml"], abs=1.5e-4)  # each rounded to 4 digits
        assert e["bml"] == pytest.approx(weight * e["diagnostics/bml"], abs=5e-5)
    assert steps[-1]["diagnostics/cluster_started"] == 1.0 and steps[-1]["diagnostics/cluster_start_step"] == 0.0
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    shutil.rmtree(cut / "checkpoints" / "checkpoint-8")
    for name in ("model", "results.json", "results.md", "curves.png"):
        path = cut / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    again_config = hardcse.make_config(config_file=cut / "config.yaml", output=str(cut))
    resumed = train(again_config, resume=True, show_progress=False)
    again = [e for e in resumed["history"] if "loss" in e]
    assert [e["loss"] for e in again] == pytest.approx([e["loss"] for e in steps], rel=1e-6)
    assert resumed["test"]["avg"] == reference["test"]["avg"]
