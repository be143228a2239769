"""The contrastive frame: InfoNCE value and gradient against a hand computation."""

from __future__ import annotations

import math

import torch

from hardcse.objectives.base import ContrastiveBatch, HardCSELoss, Part, info_nce, pairwise_cosine
from hardcse.objectives.cached import CachedStep
from hardcse.objectives.encoding import TwoViewEncoder, pads_right


def _hand_infonce(z1, z2, tau, extra=None):
    n = len(z1)
    total = 0.0
    for i in range(n):

        def cos(a, b):
            return float(a @ b / (a.norm() * b.norm()))

        row = [cos(z1[i], z2[j]) / tau for j in range(n)]
        if extra is not None:
            row += [float(v) / tau for v in extra[i]]
        denom = sum(math.exp(v) for v in row)
        total += -math.log(math.exp(row[i]) / denom)
    return total / n


def test_infonce_matches_hand_computation():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    z2 = torch.tensor([[1.0, 0.1], [0.2, 1.0], [-1.0, 1.0]])
    loss = HardCSELoss(model=torch.nn.Identity(), temperature=0.5)
    out = loss.compute_loss_from_embeddings(z1, z2)
    assert set(out) == {"infonce"}
    assert abs(float(out["infonce"]) - _hand_infonce(z1, z2, 0.5)) < 1e-6


def test_loss_is_fp32_under_bf16_autocast():
    # Mixed precision stops at the embeddings: the cosines and the loss are computed in fp32, so the
    # loss equals the fp32 one for the same (bf16-representable) embeddings.
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(8, 16, generator=g).bfloat16().float()
    z2 = torch.randn(8, 16, generator=g).bfloat16().float()
    loss = HardCSELoss(model=torch.nn.Identity(), temperature=0.05)
    want = float(loss.compute_loss_from_embeddings(z1, z2)["infonce"])
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        got = loss.compute_loss_from_embeddings(z1.bfloat16(), z2.bfloat16())["infonce"]
    assert got.dtype == torch.float32
    assert abs(float(got) - want) < 1e-6
    assert abs(want - _hand_infonce(z1, z2, 0.05)) < 1e-5


def test_infonce_gradient_matches_closed_form():
    # d loss / d s_ij = (softmax_ij - 1[i=j]) / (N tau) for the scaled logits.
    torch.manual_seed(0)
    sim = torch.randn(4, 4).clamp(-1, 1).requires_grad_(True)
    batch = ContrastiveBatch(z1=torch.zeros(4, 2), z2=torch.zeros(4, 2), sim=sim, ids=None, step=0, temperature=0.1)
    info_nce(batch).backward()
    expected = (torch.softmax(sim.detach() / 0.1, dim=1) - torch.eye(4)) / (4 * 0.1)
    assert torch.allclose(sim.grad, expected, atol=1e-6)


def test_extra_columns_and_removal():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[1.0, 0.2], [0.3, 1.0]])
    extra = torch.tensor([[0.5, -0.2], [0.1, 0.4]])

    class AddColumns(Part):
        def contribute(self, batch):
            batch.add_columns(extra)

    loss = HardCSELoss(model=torch.nn.Identity(), parts=[AddColumns()], temperature=0.05)
    got = float(loss.compute_loss_from_embeddings(z1, z2)["infonce"])
    assert abs(got - _hand_infonce(z1, z2, 0.05, extra)) < 1e-5

    class RemoveAll(Part):
        def contribute(self, batch):
            batch.remove_in_batch(torch.ones(2, 2, dtype=torch.bool))

    loss = HardCSELoss(model=torch.nn.Identity(), parts=[RemoveAll()], temperature=0.05)
    # Only the positive is left in each row: the loss is exactly zero.
    assert float(loss.compute_loss_from_embeddings(z1, z2)["infonce"]) == 0.0


def test_pairwise_cosine():
    a = torch.tensor([[3.0, 4.0]])
    b = torch.tensor([[4.0, 3.0], [0.0, 0.0]])
    cos = pairwise_cosine(a, b)
    assert abs(float(cos[0, 0]) - 24 / 25) < 1e-6
    assert float(cos[0, 1]) == 0.0


def test_step_counts_training_forwards_only():
    loss = HardCSELoss(model=torch.nn.Identity())
    z = torch.randn(3, 4)
    loss.compute_loss_from_embeddings(z, z)
    loss.eval()
    loss.compute_loss_from_embeddings(z, z)
    assert int(loss.step) == 1


def test_length_chunks_give_the_same_embeddings_and_gradients(tmp_path):
    from helpers import make_tiny_training_model

    model = make_tiny_training_model(tmp_path / "bert")
    model.eval()  # no dropout: both encodings must agree
    sentences = ["a", "the cat sits on the house", "a dog runs", "the king of the state is old and wise", "birds"]
    features = model.preprocess(sentences)
    assert features["attention_mask"].sum(1).unique().numel() > 2  # lengths differ: chunks get cut
    words = model[0].model.get_input_embeddings()
    lookups = []
    words.register_forward_hook(lambda module, args, out: lookups.append(args[0].shape))
    results = []
    for chunks in (1, 3):
        encoder = TwoViewEncoder(length_chunks=chunks)
        model.zero_grad()
        lookups.clear()
        z1, z2 = encoder.encode_two_views(model, features)
        (z1.square().sum() + 2 * z2.sum()).backward()
        # The chunked passes share one word-embedding lookup of all 2N rows (one dense gradient).
        assert lookups == [features["input_ids"].repeat(2, 1).shape]
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results.append((z1.detach(), z2.detach(), *grads))
    assert len(results[0]) == len(results[1]) > 10
    for a, b in zip(results[0], results[1], strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    # Left padding is never cut: the chunked path falls back to one pass.
    assert not pads_right(torch.tensor([[0, 1, 1], [1, 1, 1]]))


def test_padding_optimal_split_hand_worked_and_against_brute_force():
    import itertools
    import random

    from hardcse.objectives.encoding import padding_optimal_split

    assert padding_optimal_split([1, 1, 1, 10], 2) == [3, 1]  # 3x1 + 1x10 = 13 (halves: 22)
    assert padding_optimal_split([5, 5, 5], 4) == [3]  # no cut saves anything: one piece
    assert padding_optimal_split([2, 7], 1) == [2]
    assert padding_optimal_split([], 3) == []

    def work(lengths, sizes):
        out, start = 0, 0
        for size in sizes:
            out += size * lengths[start + size - 1]
            start += size
        return out

    rng = random.Random(0)
    for _ in range(200):
        n, chunks = rng.randint(1, 9), rng.randint(1, 4)
        lengths = sorted(rng.randint(1, 32) for _ in range(n))
        sizes = padding_optimal_split(lengths, chunks)
        assert sum(sizes) == n and len(sizes) <= chunks and min(sizes) > 0
        best = min(
            work(lengths, [b - a for a, b in zip((0, *cuts), (*cuts, n), strict=True)])
            for k in range(min(chunks, n))
            for cuts in itertools.combinations(range(1, n), k)
        )
        assert work(lengths, sizes) == best


def test_the_loss_is_the_objective_and_its_encoding_is_injected():
    # forward = the strategy's views of the (current) model, then the objective on them; the loss's
    # config reports the strategy's and the cached step's settings.
    z1 = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    z2 = torch.tensor([[1.0, 0.1], [0.2, 1.0], [-1.0, 1.0]])

    class Fixed(TwoViewEncoder):
        def encode(self, model, features, labels=None):
            self.seen = model
            return z1, z2, None

    encoder = Fixed(length_chunks=3, gather_across_devices=False)
    loss = HardCSELoss(torch.nn.Identity(), temperature=0.5, encoder=encoder)
    # The trainer puts its (DDP-wrapped) model into the loss: the strategy encodes with that one.
    loss.model = wrapped = torch.nn.Sequential(torch.nn.Identity())
    out = loss([{"input_ids": torch.zeros(3, 2, dtype=torch.long)}])
    assert encoder.seen is wrapped
    assert abs(float(out["infonce"]) - _hand_infonce(z1, z2, 0.5)) < 1e-6
    config = loss.get_config_dict()
    assert config["encoding"] == {"length_chunks": 3, "gather_across_devices": False}
    assert config["cached_step"] is None
    cached = HardCSELoss(torch.nn.Identity(), cached_step=CachedStep(4, kept_passes=0)).get_config_dict()
    assert cached["encoding"] == {"length_chunks": 1, "gather_across_devices": True}
    settings = {"mini_batch_size": 4, "rows_per_sentence": 1, "kept_passes": 0, "release_policy": "step"}
    assert cached["cached_step"] == settings
    # The loss's state is the objective's (the step counter, the parts' buffers): no encoding state.
    assert set(HardCSELoss(torch.nn.Identity(), encoder=encoder).state_dict()) == {"step"}
