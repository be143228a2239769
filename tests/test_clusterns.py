"""ClusterNS: the K-means state machine and the loss, against hand-worked small examples.

Expected numbers are written out by hand or computed by small independent loops in this file
(plain Python floats), never by the code under test.
"""

from __future__ import annotations

import math

import pytest
import torch

from hardcse.cluster import ClusterState
from hardcse.errors import ConfigError
from hardcse.numeric import pairwise_cosine
from hardcse.objectives.base import HardCSELoss
from hardcse.objectives.clusterns import (
    CLUSTERNS_PRESETS,
    CPU_CLUSTERNS,
    DIAGNOSTIC_KEYS,
    ClusterNSConfig,
    build_clusterns,
    clusterns_parts,
)
from hardcse.objectives.parts.centroids import CentroidNegatives
from hardcse.objectives.parts.false_negatives import BidirectionalMarginLoss, MaskFalseNegatives, bml_loss

# The running example (d = 2, K = 3, N = 4), worked by hand:
#   points Z = (3,2), (-1,1), (-2,1), (1,2);  centroids C = (1,0), (0,1), (-1,-1).
#   assignment by cosine: (3,2)->c0 (0.832 vs 0.555), the three others -> c1; c2 gets nothing.
#   momentum, eta = 0.5, sum: c0 = .5*(3,2) + .5*(1,0) = (2, 1)
#                             c1 = .5*((-1,1)+(-2,1)+(1,2)) + .5*(0,1) = .5*(-2,4) + (0,.5) = (-1, 2.5)
#                             c2 = (-1,-1) unchanged (empty).
#   with the updated centroids (1,2) now goes to c0 (cos 0.8 vs 0.664): a' = [0, 1, 1, 0],
#   mask pairs (0,3), (3,0), (1,2), (2,1); second-nearest centroids: [1, 2, 2, 1].
Z = [[3.0, 2.0], [-1.0, 1.0], [-2.0, 1.0], [1.0, 2.0]]
C = [[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]
C_UPDATED = [[2.0, 1.0], [-1.0, 2.5], [-1.0, -1.0]]


def cos(a, b) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def started_state(centroids=C, eta=0.5, **kwargs) -> ClusterState:
    state = ClusterState(k=len(centroids), dim=len(centroids[0]), eta=eta, **kwargs)
    state.centroids.copy_(torch.tensor(centroids))
    state.started.fill_(True)
    state.start_step.fill_(0)
    return state


def clusterns_loss(config: ClusterNSConfig, dim: int, tau: float = 0.05) -> tuple[HardCSELoss, CentroidNegatives]:
    """A loss with the ClusterNS parts of ``config`` and its centroid miner (which holds the K-means state)."""
    parts = clusterns_parts(config, dim=dim)
    return HardCSELoss(torch.nn.Identity(), parts, temperature=tau), parts[0]


def hand_infonce(z1, z2, tau, extra=None, log_w=None, removed=None) -> float:
    n = len(z1)
    total = 0.0
    for i in range(n):
        row = []
        for j in range(n):
            if removed is not None and removed[i][j] and i != j:
                continue
            row.append((cos(z1[i], z2[j]) / tau, i == j))
        for k, c in enumerate(extra or []):
            w = log_w if (log_w is not None and k == i) else 0.0
            row.append((cos(z1[i], c) / tau + w, False))
        denom = sum(math.exp(v) for v, _ in row)
        pos = next(v for v, is_pos in row if is_pos)
        total += -(pos - math.log(denom))
    return total / n


def hand_bml(z1, z2, mask, alpha, beta, normalize="all") -> float:
    n = len(z1)
    s = [[cos(z1[i], z2[j]) for j in range(n)] for i in range(n)]
    total, count = 0.0, 0
    for i in range(n):
        for j in range(n):
            m = 1.0 if mask[i][j] else 0.0
            d = m * (s[i][j] - s[i][i])
            term = max(0.0, d + alpha) + max(0.0, -d - beta)
            if normalize == "all" or m:
                total += term
                count += 1
    return total / count if count else 0.0


# -- start trigger -----------------------------------------------------------------------------


def test_trigger_uses_full_matrix_mean_fires_once_and_never_reinitialises():
    state = ClusterState(k=2, dim=2, theta=0.5, eta=0.5)
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # Off-diagonal mean 0.1 but the full mean (diagonal included) is 0.55 > 0.5: no start.
    out = state(z, torch.tensor([[1.0, 0.1], [0.1, 1.0]]), step=0)
    assert not out.active and not out.started_now and not state.is_started
    assert int(state.start_step) == -1
    # Mean exactly 0.5 (<= theta): starts now; no hard negatives or mask on the start step.
    out = state(z, torch.tensor([[0.75, 0.25], [0.25, 0.75]]), step=1)
    assert out.started_now and not out.active and out.hard_negative is None and out.mask is None
    assert state.is_started and int(state.start_step) == 1
    picked = state.centroids.clone()
    # Later steps (even with mean <= theta) update, never re-initialise.
    k_of = {tuple(c): k for k, c in enumerate(picked.tolist())}
    assert set(k_of) == {(1.0, 0.0), (0.0, 1.0)}  # K = N = 2: both rows picked
    out = state(torch.tensor([[2.0, 0.2], [0.2, 3.0]]), torch.zeros(2, 2), step=2)
    assert out.active and not out.started_now and int(state.start_step) == 1
    expected = torch.zeros(2, 2)
    expected[k_of[(1.0, 0.0)]] = torch.tensor([0.5 * 2.0 + 0.5 * 1.0, 0.5 * 0.2])  # (1.5, 0.1)
    expected[k_of[(0.0, 1.0)]] = torch.tensor([0.5 * 0.2, 0.5 * 3.0 + 0.5 * 1.0])  # (0.1, 2.0)
    assert torch.allclose(state.centroids, expected)


def test_trigger_does_not_fire_in_evaluation():
    state = ClusterState(k=1, dim=2, theta=0.9)
    out = state(torch.eye(2), torch.zeros(2, 2), step=0, update=False)
    assert not out.active and not state.is_started


# -- greedy-chain initialisation --------------------------------------------------------------

# Cross-view cosines S[i][j] = cos(z_i, z'_j) of a 5-sentence batch.
CHAIN_SIM = [
    [0.9, 0.1, -0.5, 0.3, 0.2],
    [-0.9, 0.8, 0.4, -0.6, 0.0],
    [0.1, -0.3, 0.7, 0.5, -0.2],
    [-0.4, 0.6, 0.0, 0.9, -0.1],
    [0.3, 0.2, -0.7, 0.1, 0.8],
]


def test_initialisation_follows_the_argmin_chain_on_cross_view_rows():
    # first = 0. Mark col 0; row 0 = [100, .1, -.5, .3, .2] -> 2.
    # Mark col 2; row 2 = [100, -.3, 100, .5, -.2] -> 1.
    # Mark col 1; row 1 = [100, 100, 100, -.6, 0] -> 3 (col 0 (-0.9) stays excluded: the marks
    # accumulate). Picks: 0, 2, 1, 3.
    z = torch.arange(10, dtype=torch.float32).reshape(5, 2) + 1.0
    sim = torch.tensor(CHAIN_SIM)
    before = sim.clone()
    state = ClusterState(k=4, dim=2)
    idx = state.initialize(z, sim, step=7, first=0)
    assert idx.tolist() == [0, 2, 1, 3]
    assert torch.equal(state.centroids, z[[0, 2, 1, 3]])
    assert torch.equal(sim, before)  # the caller's matrix is not modified
    assert state.is_started and int(state.start_step) == 7


def test_first_row_is_a_function_of_seed_and_step_and_forward_uses_it():
    a, b = ClusterState(k=5, dim=2, seed=3), ClusterState(k=5, dim=2, seed=3)
    rows = [a.first_row(5, s) for s in range(30)]
    assert rows == [b.first_row(5, s) for s in range(30)]
    assert all(0 <= r < 5 for r in rows) and len(set(rows)) > 1
    z = torch.randn(5, 2)
    sim = torch.tensor(CHAIN_SIM) - 1.0  # mean <= 0.4: starts
    a(z, sim, step=11)
    assert torch.equal(a.centroids[0], z[a.first_row(5, 11)])
    # K = N: the chain visits every row once.
    assert sorted(a.centroids.tolist()) == sorted(z.tolist())


def test_batch_smaller_than_k_raises_at_the_start_step():
    state = ClusterState(k=6, dim=2, theta=1.0)
    with pytest.raises(ConfigError, match=r"at least K=6 sentences in a \(global\) batch, got N=5"):
        state(torch.randn(5, 2), torch.zeros(5, 5), step=0)


def test_short_last_batch_defers_the_start():
    state = ClusterState(k=4, dim=2, theta=1.0, batch_size=8)
    out = state(torch.randn(3, 2), torch.zeros(3, 3), step=0)
    assert not out.started_now and not state.is_started
    out = state(torch.randn(8, 2), torch.zeros(8, 8), step=1)
    assert out.started_now and int(state.start_step) == 1


# -- assignment, update, hard negatives, mask ----------------------------------------------------


def test_assignment_is_by_cosine_not_distance():
    state = started_state(centroids=[[1.0, 0.0], [0.0, 5.0]])
    # (0.9, 1): cos 0.669 to c0, 0.743 to c1 -> c1, although it is nearer c0 in Euclidean distance.
    assert state.assign(torch.tensor([[0.9, 1.0]])).tolist() == [1]
    assert state.assign(torch.tensor(Z)).tolist() == [0, 1, 1, 1]


@pytest.mark.parametrize(
    ("rule", "how", "expected"),
    [
        ("momentum", "sum", C_UPDATED),
        # mean: c1 = .5 * (-2,4)/3 + .5 * (0,1) = (-1/3, 7/6)
        ("momentum", "mean", [[2.0, 1.0], [-1 / 3, 7 / 6], [-1.0, -1.0]]),
        ("kmeans", "sum", [[3.0, 2.0], [-2.0, 4.0], [-1.0, -1.0]]),
        ("kmeans", "mean", [[3.0, 2.0], [-2 / 3, 4 / 3], [-1.0, -1.0]]),
    ],
)
def test_update_rules_and_empty_cluster_unchanged(rule, how, expected):
    state = started_state(update_rule=rule, centroid_update=how)
    sizes = state.update(torch.tensor(Z), torch.tensor([0, 1, 1, 1]))
    assert sizes.tolist() == [1, 3, 0]
    assert torch.allclose(state.centroids, torch.tensor(expected), atol=1e-6)
    assert torch.equal(state.centroids[2], torch.tensor(C[2]))  # bit-identical
    assert state.empty_steps.tolist() == [0, 0, 1] and int(state.updates) == 1


def test_momentum_with_small_eta():
    state = started_state(eta=1e-3)
    state.update(torch.tensor(Z), torch.tensor([0, 1, 1, 1]))
    c0 = [1e-3 * 3.0 + 0.999 * 1.0, 1e-3 * 2.0]
    c1 = [1e-3 * -2.0, 1e-3 * 4.0 + 0.999]
    assert torch.allclose(state.centroids[:2], torch.tensor([c0, c1]), atol=1e-7)


def test_step_hard_negatives_and_mask_use_the_updated_centroids():
    state = started_state()
    z = torch.tensor(Z)
    # Before the update the second-nearest centroids would be [1, 2, 2, 0].
    before = [sorted(range(3), key=lambda k, zi=zi: -cos(zi, C[k]))[1] for zi in Z]
    assert before == [1, 2, 2, 0]
    out = state(z, torch.zeros(4, 4), step=3)
    assert torch.allclose(state.centroids, torch.tensor(C_UPDATED))
    after = [sorted(range(3), key=lambda k, zi=zi: -cos(zi, C_UPDATED[k]))[1] for zi in Z]
    assert after == [1, 2, 2, 1]
    assert out.hard_negative.tolist() == after
    assert out.assignment.tolist() == [0, 1, 1, 0]
    assert out.sizes.tolist() == [2, 2, 0]
    expected_mask = [[False] * 4 for _ in range(4)]
    for i, j in [(0, 3), (3, 0), (1, 2), (2, 1)]:
        expected_mask[i][j] = True
    assert out.mask.tolist() == expected_mask


def test_same_cluster_mask_zero_diagonal():
    mask = ClusterState.same_cluster_mask(torch.tensor([0, 1, 0, 2, 1]))
    expected = torch.zeros(5, 5, dtype=torch.bool)
    for i, j in [(0, 2), (2, 0), (1, 4), (4, 1)]:
        expected[i, j] = True
    assert torch.equal(mask, expected)
    assert not ClusterState.same_cluster_mask(torch.zeros(3, dtype=torch.long)).diagonal().any()


def test_evaluation_step_leaves_the_state_unchanged():
    state = started_state()
    before = {k: v.clone() for k, v in state.state_dict().items()}
    out = state(torch.tensor(Z), torch.zeros(4, 4), step=3, update=False)
    assert out.active
    # With the old centroids: a = [0, 1, 1, 1], second-nearest [1, 2, 2, 0].
    assert out.assignment.tolist() == [0, 1, 1, 1] and out.hard_negative.tolist() == [1, 2, 2, 0]
    for k, v in state.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_reinit_empty_moves_stale_cluster_to_the_farthest_point():
    # c2 = (-1,-1) never gets a point. Points: (1, 0.1) and (0.1, 1) are near c0/c1 (cos 0.995),
    # (1, 1) is the farthest from its own centroid (cos 0.707): after 2 empty steps c2 := (1, 1).
    z = torch.tensor([[1.0, 0.1], [0.1, 1.0], [1.0, 1.0]])
    state = started_state(centroids=[[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], eta=0.0, reinit_empty=True,
                          reinit_patience=2)  # fmt: skip
    out = state(z, torch.zeros(3, 3), step=1)
    assert int(out.reinitialized) == 0 and state.empty_steps.tolist() == [0, 0, 1]
    out = state(z, torch.zeros(3, 3), step=2)
    assert int(out.reinitialized) == 1 and int(state.reinitialized) == 1
    assert torch.equal(state.centroids[2], torch.tensor([1.0, 1.0]))
    assert state.empty_steps.tolist() == [0, 0, 0]
    assert out.assignment.tolist() == [0, 1, 2]  # (1, 1) now sits in the re-initialised cluster
    # Official behaviour (default): never re-initialised.
    off = started_state(centroids=[[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], eta=0.0)
    for s in range(5):
        off(z, torch.zeros(3, 3), step=s)
    assert torch.equal(off.centroids[2], torch.tensor([-1.0, -1.0])) and off.empty_steps.tolist() == [0, 0, 5]


# -- precision -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_centroids_stay_fp32_under_low_precision_inputs(dtype):
    z = torch.tensor(Z).to(dtype)
    state = started_state(eta=1e-3)
    state(z, torch.zeros(4, 4, dtype=dtype), step=1)
    assert state.centroids.dtype == torch.float32
    # fp32 arithmetic on the (exactly representable) inputs: the 1e-3 step is not lost.
    c0 = [1e-3 * 3.0 + 0.999 * 1.0, 1e-3 * 2.0]
    assert torch.allclose(state.centroids[0], torch.tensor(c0), atol=1e-7)
    assert float(state.centroids[0, 1]) != 0.0

    loss, part = clusterns_loss(ClusterNSConfig(k=3, theta=1.0, bml_weight=0.5), dim=2)
    z1 = torch.tensor(Z).to(dtype)
    z2 = (torch.tensor(Z) + 0.1).to(dtype)
    for _ in range(3):
        out = loss.compute_loss_from_embeddings(z1, z2)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert part.cluster.centroids.dtype == torch.float32


# -- BML -------------------------------------------------------------------------------------------

# S and mask for the 3 x 3 hand example: pairs (0,1) and (1,0) are in the same cluster.
BML_S = [[0.9, 0.85, 0.1], [0.1, 0.8, 0.2], [0.3, 0.7, 0.95]]
BML_M = [[False, True, False], [True, False, False], [False, False, False]]


def test_bml_value_and_gradient_by_hand():
    # alpha = 0.2, beta = 0.5.
    # D01 = 0.85 - 0.9 = -0.05: max(0, 0.15) + max(0, 0.05 - 0.5) = 0.15  (lower hinge active)
    # D10 = 0.1 - 0.8 = -0.7:   max(0, -0.5) + max(0, 0.7 - 0.5) = 0.2   (upper hinge active)
    # 7 unmasked entries: D = 0 -> max(0, 0.2) = 0.2 each (constant).
    # all: (0.15 + 0.2 + 7 * 0.2) / 9 = 1.75 / 9; masked: (0.15 + 0.2) / 2 = 0.175.
    s = torch.tensor(BML_S, requires_grad=True)
    mask = torch.tensor(BML_M)
    value = bml_loss(s, mask, alpha=0.2, beta=0.5)
    assert abs(float(value.detach()) - 1.75 / 9) < 1e-6
    value.backward()
    # d/dS01 = +1/9, d/dS00 = -1/9 (lower hinge); d/dS10 = -1/9, d/dS11 = +1/9 (upper hinge).
    g = 1 / 9
    expected = torch.tensor([[-g, g, 0.0], [-g, g, 0.0], [0.0, 0.0, 0.0]])
    assert torch.allclose(s.grad, expected, atol=1e-7)

    s = torch.tensor(BML_S, requires_grad=True)
    value = bml_loss(s, mask, alpha=0.2, beta=0.5, normalize="masked")
    assert abs(float(value.detach()) - 0.175) < 1e-6
    value.backward()
    g = 1 / 2
    expected = torch.tensor([[-g, g, 0.0], [-g, g, 0.0], [0.0, 0.0, 0.0]])
    assert torch.allclose(s.grad, expected, atol=1e-7)


def test_bml_without_masked_pairs():
    s = torch.tensor(BML_S)
    none = torch.zeros(3, 3, dtype=torch.bool)
    assert abs(float(bml_loss(s, none, 0.2, 0.5)) - 0.2) < 1e-7  # the constant max(0, alpha)
    assert float(bml_loss(s, none, 0.0, 0.3)) == 0.0
    assert float(bml_loss(s, none, 0.2, 0.5, normalize="masked")) == 0.0


# -- the full loss -----------------------------------------------------------------------------------

Z2 = [[2.5, 2.5], [-1.0, 0.5], [-2.0, 1.5], [0.5, 2.0]]
MASK_PAIRS = [[False, False, False, True], [False, False, True, False], [False, True, False, False],
              [True, False, False, False]]  # fmt: skip
HARD = [1, 2, 2, 1]


def started_loss(tau=0.05, **cfg):
    loss, part = clusterns_loss(ClusterNSConfig(k=3, eta=0.5, **cfg), dim=2, tau=tau)
    part.cluster.centroids.copy_(torch.tensor(C))
    part.cluster.started.fill_(True)
    part.cluster.start_step.fill_(0)
    return loss, part


@pytest.mark.parametrize("w", [0.0, 1.5])
def test_full_loss_matches_independent_computation(w):
    loss, part = started_loss(bml_weight=0.3, bml_alpha=0.1, bml_beta=0.4, hard_negative_weight=w)
    z1 = torch.tensor(Z, requires_grad=True)
    out = loss.compute_loss_from_embeddings(z1, torch.tensor(Z2))
    assert set(out) == {"infonce", "bml"}
    extra = [C_UPDATED[k] for k in HARD]  # the N shared hard-negative columns
    expected = hand_infonce(Z, Z2, 0.05, extra=extra, log_w=w)
    assert abs(float(out["infonce"].detach()) - expected) < 1e-4
    bml = hand_bml(Z, Z2, MASK_PAIRS, 0.1, 0.4)
    assert abs(float(out["bml"].detach()) - 0.3 * bml) < 1e-6
    d = loss.last_diagnostics
    assert list(d) == list(DIAGNOSTIC_KEYS)
    assert d["cluster_started"] == 1.0 and d["cluster_start_step"] == 0.0
    mean_s = sum(cos(Z[i], Z2[j]) for i in range(4) for j in range(4)) / 16
    assert abs(d["batch_mean_cos"] - mean_s) < 1e-6
    assert (d["cluster_size_min"], d["cluster_size_median"], d["cluster_size_max"]) == (0.0, 2.0, 2.0)
    assert d["cluster_empty"] == 1.0 and d["false_negative_pairs"] == 4.0
    hn_cos = sum(cos(Z[i], C_UPDATED[HARD[i]]) for i in range(4)) / 4
    assert abs(d["hard_negative_cos"] - hn_cos) < 1e-6
    assert abs(d["bml"] - bml) < 1e-6
    # Gradient flows into z1 (InfoNCE, centroid columns and BML); the centroids get none.
    sum(out.values()).backward()
    assert z1.grad is not None and torch.isfinite(z1.grad).all()
    assert not part.cluster.centroids.requires_grad


def test_mask_option_removes_same_cluster_columns_instead_of_bml():
    loss, _ = started_loss(false_negatives="mask", bml_weight=0.3)
    out = loss.compute_loss_from_embeddings(torch.tensor(Z), torch.tensor(Z2))
    assert set(out) == {"infonce"}
    extra = [C_UPDATED[k] for k in HARD]
    expected = hand_infonce(Z, Z2, 0.05, extra=extra, removed=MASK_PAIRS)
    assert abs(float(out["infonce"]) - expected) < 1e-4
    assert expected < hand_infonce(Z, Z2, 0.05, extra=extra) - 1e-6  # columns really removed

    loss, _ = started_loss(false_negatives="both", bml_weight=0.3, bml_normalize="masked")
    out = loss.compute_loss_from_embeddings(torch.tensor(Z), torch.tensor(Z2))
    assert abs(float(out["infonce"]) - expected) < 1e-4
    assert abs(float(out["bml"]) - 0.3 * hand_bml(Z, Z2, MASK_PAIRS, 0.2, 0.5, "masked")) < 1e-6


@pytest.mark.parametrize(
    ("settings", "kinds", "bml_weight"),
    [
        ({}, ["centroid_negatives", "bml"], 0.3),
        ({"false_negatives": "mask"}, ["centroid_negatives", "mask_false_negatives", "bml"], 0.0),
        ({"false_negatives": "both"}, ["centroid_negatives", "mask_false_negatives", "bml"], 0.3),
        ({"bml_weight": 0.0}, ["centroid_negatives", "bml"], 0.0),
    ],
)
def test_the_build_injects_the_parts_the_config_asks_for(settings, kinds, bml_weight):
    parts = clusterns_parts(ClusterNSConfig(k=3, **{"bml_weight": 0.3, **settings}), dim=2)
    assert [p.name for p in parts] == kinds
    assert [p.stage for p in parts] == ["negative"] + ["false_negative"] * (len(kinds) - 1)
    assert isinstance(parts[0], CentroidNegatives) and isinstance(parts[-1], BidirectionalMarginLoss)
    assert parts[-1].weight == bml_weight  # weight 0: the diagnostic only
    assert all(p.title == "ClusterNS" and "deng2023clusterns" in p.citation for p in parts)
    assert parts[0].get_config_dict() == {
        "k": 3, "theta": 0.4, "eta": 1e-3, "update_rule": "momentum", "centroid_update": "sum",
        "reinit_empty": False, "reinit_patience": 100, "seed": 42, "columns": True, "log_weight": 0.0,
    }  # fmt: skip
    assert parts[-1].get_config_dict() == {"weight": bml_weight, "alpha": 0.2, "beta": 0.5, "normalize": "all"}
    assert not clusterns_parts(ClusterNSConfig(k=3, hard_negatives=False), dim=2)[0].columns


def test_mask_mode_still_logs_the_unweighted_bml():
    loss, _ = started_loss(false_negatives="mask", bml_weight=0.3, bml_alpha=0.1, bml_beta=0.4)
    out = loss.compute_loss_from_embeddings(torch.tensor(Z), torch.tensor(Z2))
    assert set(out) == {"infonce"}
    assert abs(loss.last_diagnostics["bml"] - hand_bml(Z, Z2, MASK_PAIRS, 0.1, 0.4)) < 1e-6
    assert list(loss.last_diagnostics) == list(DIAGNOSTIC_KEYS)


def test_false_negative_handlers_act_on_the_published_mask_only():
    """Ignore (no handler), mask and BML on a hand mask, without any clustering."""
    from hardcse.objectives.base import ContrastiveBatch, info_nce

    z1, z2 = torch.tensor(Z), torch.tensor(Z2)

    def batch() -> ContrastiveBatch:
        b = ContrastiveBatch(z1=z1, z2=z2, sim=pairwise_cosine(z1, z2), ids=None, step=0, temperature=0.05)
        b.mark_false_negatives(torch.tensor(MASK_PAIRS) | torch.eye(4, dtype=torch.bool))  # diagonal dropped
        return b

    ignored = batch()
    assert int(ignored.false_negatives.sum()) == 4 and ignored.removed is None
    assert abs(float(info_nce(ignored)) - hand_infonce(Z, Z2, 0.05)) < 1e-4
    masked = batch()
    MaskFalseNegatives()(masked)
    assert abs(float(info_nce(masked)) - hand_infonce(Z, Z2, 0.05, removed=MASK_PAIRS)) < 1e-4
    penalised = batch()
    BidirectionalMarginLoss(weight=0.5, alpha=0.1, beta=0.4)(penalised)
    assert abs(float(penalised.losses["bml"]) - 0.5 * hand_bml(Z, Z2, MASK_PAIRS, 0.1, 0.4)) < 1e-6
    assert penalised.removed is None  # BML leaves the denominator alone
    nothing = ContrastiveBatch(z1=z1, z2=z2, sim=pairwise_cosine(z1, z2), ids=None, step=0, temperature=0.05)
    MaskFalseNegatives()(nothing)
    BidirectionalMarginLoss(weight=0.5)(nothing)
    assert nothing.removed is None and float(nothing.losses["bml"]) == 0.0 and nothing.diagnostics["bml"] == 0.0


def test_before_start_plain_simcse_and_stable_keys():
    loss, _ = clusterns_loss(ClusterNSConfig(k=2, theta=-1.0), dim=2)  # never starts
    out = loss.compute_loss_from_embeddings(torch.tensor(Z), torch.tensor(Z2))
    assert set(out) == {"infonce", "bml"} and float(out["bml"]) == 0.0
    assert abs(float(out["infonce"]) - hand_infonce(Z, Z2, 0.05)) < 1e-4
    d = loss.last_diagnostics
    assert list(d) == list(DIAGNOSTIC_KEYS)
    assert d["cluster_started"] == 0.0 and d["cluster_start_step"] == -1.0
    # lambda = 0 (RoBERTa-large preset): no bml component at all.
    loss, _ = clusterns_loss(ClusterNSConfig(k=2, bml_weight=0.0), dim=2)
    assert set(loss.compute_loss_from_embeddings(torch.tensor(Z), torch.tensor(Z2))) == {"infonce"}


def test_start_step_is_plain_simcse():
    loss, part = clusterns_loss(ClusterNSConfig(k=3, theta=1.0, bml_weight=0.3), dim=2)
    out = loss.compute_loss_from_embeddings(torch.tensor(Z), torch.tensor(Z2))
    assert part.cluster.is_started and loss.last_diagnostics["cluster_start_step"] == 0.0
    assert abs(float(out["infonce"]) - hand_infonce(Z, Z2, 0.05)) < 1e-4 and float(out["bml"]) == 0.0


# -- state round trip --------------------------------------------------------------------------------


def test_state_dict_round_trip_gives_identical_next_steps():
    from safetensors.torch import load, save

    torch.manual_seed(0)
    cfg = ClusterNSConfig(k=4, theta=0.2, eta=0.1, bml_weight=0.5, bml_alpha=0.1, bml_beta=0.6)
    batches = []
    for _ in range(6):
        z1 = torch.randn(8, 5)
        batches.append((z1, z1 + 0.3 * torch.randn(8, 5)))
    # Two steps whose batch-mean cosine is high (not started), then the rest.
    batches[0] = (batches[0][0] + 5.0, batches[0][1] + 5.0)
    batches[1] = (batches[1][0] + 5.0, batches[1][1] + 5.0)

    def new_loss():
        return HardCSELoss(torch.nn.Identity(), build_clusterns(cfg, dim=5, batch_size=8), temperature=0.05)

    for cut in (2, 4):  # resume before the start step (exact re-pick) and after it
        a = new_loss()
        for z1, z2 in batches[:cut]:
            a.compute_loss_from_embeddings(z1, z2)
        b = new_loss()
        b.load_state_dict(load(save({k: v.contiguous() for k, v in a.state_dict().items()})))
        assert int(b.step) == cut
        for z1, z2 in batches[cut:]:
            out_a, out_b = a.compute_loss_from_embeddings(z1, z2), b.compute_loss_from_embeddings(z1, z2)
            assert {k: float(v) for k, v in out_a.items()} == {k: float(v) for k, v in out_b.items()}
            assert a.last_diagnostics == b.last_diagnostics
        assert a.last_diagnostics["cluster_start_step"] == 2.0
        for k, v in a.state_dict().items():
            assert torch.equal(v, b.state_dict()[k]), k


def test_buffers_have_fixed_shapes_from_construction():
    part = clusterns_parts(ClusterNSConfig(k=5), dim=3)[0]
    shapes = {k: (tuple(v.shape), v.dtype) for k, v in part.state_dict().items()}
    assert shapes == {
        "cluster.centroids": ((5, 3), torch.float32),
        "cluster.started": ((), torch.bool),
        "cluster.start_step": ((), torch.long),
        "cluster.updates": ((), torch.long),
        "cluster.empty_steps": ((5,), torch.long),
        "cluster.reinitialized": ((), torch.long),
    }
    assert int(part.cluster.start_step) == -1


# -- configuration -----------------------------------------------------------------------------------


def test_k_larger_than_batch_is_a_config_error():
    with pytest.raises(ConfigError) as err:
        build_clusterns(ClusterNSConfig(k=128), dim=8, batch_size=64)
    assert str(err.value) == (
        "ClusterNS needs at least K=128 sentences in a (global) batch, got N=64; "
        "lower --set clusterns.k=K or raise --batch-size."
    )
    assert len(build_clusterns(ClusterNSConfig(k=64), dim=8, batch_size=64)) == 2  # centroids, BML


@pytest.mark.parametrize(
    "bad",
    [{"k": 1}, {"k": 0}, {"false_negatives": "drop"}, {"bml_normalize": "sum"}, {"update_rule": "adamw"},
     {"centroid_update": "median"}, {"eta": 2.0}, {"bml_weight": -1.0}],
)  # fmt: skip
def test_invalid_config_values(bad):
    with pytest.raises(ConfigError):
        build_clusterns(ClusterNSConfig(**bad), dim=8, batch_size=256)


def test_k_one_allowed_without_hard_negatives():
    parts = build_clusterns(ClusterNSConfig(k=1, hard_negatives=False, theta=1.0), dim=2, batch_size=4)
    loss = HardCSELoss(torch.nn.Identity(), parts, temperature=0.05)
    loss.compute_loss_from_embeddings(torch.tensor(Z), torch.tensor(Z2))
    out = loss.compute_loss_from_embeddings(torch.tensor(Z), torch.tensor(Z2))
    assert abs(float(out["infonce"]) - hand_infonce(Z, Z2, 0.05)) < 1e-4  # no extra columns
    assert loss.last_diagnostics["false_negative_pairs"] == 12.0  # everything in one cluster


def test_defaults_are_the_official_code_defaults():
    c = ClusterNSConfig()
    assert (c.k, c.theta, c.eta, c.update_rule, c.bml_weight, c.bml_alpha, c.bml_beta) == (
        128,
        0.4,
        1e-3,
        "momentum",
        1e-4,
        0.2,
        0.5,
    )
    assert (
        c.hard_negative_weight,
        c.false_negatives,
        c.bml_normalize,
        c.centroid_update,
        c.reinit_empty,
    ) == (0.0, "bml", "all", "sum", False)


def test_presets():
    table = {  # README: global batch, lr, K, eta, theta, lambda, alpha, beta
        "clusterns-bert-base": ("bert-base-uncased", 256, 5e-5, 128, 1e-3, 0.4, 1e-3, 0.0, 0.3),
        "clusterns-bert-large": ("bert-large-uncased", 512, 5e-5, 128, 1e-3, 0.5, 5e-5, 0.25, 0.3),
        "clusterns-roberta-base": ("roberta-base", 512, 5e-5, 128, 1e-3, 0.4, 1e-4, 0.2, 0.5),
        "clusterns-roberta-large": ("roberta-large", 512, 5e-5, 128, 5e-4, 0.4, 0.0, 0.2, 0.5),
    }
    assert set(CLUSTERNS_PRESETS) == set(table)
    for name, (model, bs, lr, k, eta, theta, lam, alpha, beta) in table.items():
        p = CLUSTERNS_PRESETS[name]
        assert (p["model"], p["batch_size"], p["lr"]) == (model, bs, lr)
        assert (p["epochs"], p["max_seq_length"], p["eval_steps"], p["early_stopping"], p["fp16"]) == (
            1,
            32,
            125,
            3,
            True,
        )
        cfg = ClusterNSConfig(**p["clusterns"])
        assert (cfg.k, cfg.eta, cfg.theta, cfg.bml_weight, cfg.bml_alpha, cfg.bml_beta) == (
            k,
            eta,
            theta,
            lam,
            alpha,
            beta,
        )
        assert cfg.hard_negatives
        build_clusterns(cfg, dim=8, batch_size=bs)
    cpu = ClusterNSConfig(**CPU_CLUSTERNS)
    assert 2 <= cpu.k <= 64
    build_clusterns(cpu, dim=384, batch_size=64)


def test_first_centroid_seed_follows_the_run_seed_unless_set():
    """seed None (the default and the presets') takes the run's seed; an explicit seed wins."""
    assert ClusterNSConfig().seed is None and CPU_CLUSTERNS["seed"] is None
    assert all(p["clusterns"]["seed"] is None for p in CLUSTERNS_PRESETS.values())
    states = {r: build_clusterns(ClusterNSConfig(k=4), dim=2, batch_size=8, run_seed=r)[0].cluster for r in (42, 43)}
    assert states[42].seed == 42 and states[43].seed == 43
    draws = {r: [s.first_row(8, step) for step in range(20)] for r, s in states.items()}
    assert draws[42] != draws[43]
    fixed = [build_clusterns(ClusterNSConfig(k=4, seed=7), dim=2, batch_size=8, run_seed=r)[0] for r in (42, 43)]
    assert [p.get_config_dict()["seed"] for p in fixed] == [7, 7] and [p.cluster.seed for p in fixed] == [7, 7]
    assert clusterns_parts(ClusterNSConfig(k=4), dim=2)[0].cluster.seed == 42  # no run seed known: 42


def test_training_passes_the_run_seed_to_the_method(tmp_path):
    from helpers import make_tiny_training_model

    from hardcse.api import make_config
    from hardcse.training.run import build_objective

    model = make_tiny_training_model(tmp_path / "bert")
    for run_seed, method_seed, expected in ((43, None, 43), (44, None, 44), (44, 5, 5)):
        overrides = {"clusterns": {"seed": method_seed}} if method_seed is not None else {}
        config = make_config(preset="cpu", recipe="clusterns", seed=run_seed, **overrides)
        loss, _ = build_objective(config, model, ["a b"], show_progress=False)
        assert loss.parts[0].cluster.seed == expected


def test_compare_identity_uses_the_seed_a_method_draws_with(tmp_path):
    """A compare run saved before method seeds followed the run seed (clusterns: no seed key;
    hsimcse: seed 42) is the same run as today's only where its draws were the same: run seed 42."""
    import yaml

    from hardcse.api import make_config
    from hardcse.comparison.runner import RunSpec, run_state
    from hardcse.training.config import dump_yaml

    for recipe in ("clusterns", "hsimcse"):
        for seed, same in ((42, True), (43, False)):
            out = tmp_path / f"{recipe}-s{seed}"
            config = make_config(preset="cpu", recipe=recipe, seed=seed, output=str(out))
            old = yaml.safe_load(dump_yaml(config))
            if recipe == "clusterns":
                del old[recipe]["seed"]
            else:
                old[recipe]["seed"] = 42
            out.mkdir()
            (out / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
            (out / "results.json").write_text("{}")
            spec = RunSpec(label=recipe, seed=seed, config=config)
            if same:
                assert run_state(spec) == "finished"
            else:
                with pytest.raises(ConfigError, match=recipe):
                    run_state(spec)
            # Today's own config.yaml (seed: null) is always the same run.
            (out / "config.yaml").write_text(dump_yaml(config))
            assert run_state(spec) == "finished"
