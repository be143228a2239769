"""HSimCSE parts against hand computations: the adversarial ascent step, the in-batch hardest
negative, the corpus top-3 mean with self-exclusion, the quadruplet hinge and its gradient,
determinism, the official bank and the refresh callback on a tiny random BERT."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch
from helpers import make_tiny_training_model
from transformers import TrainerState

from hardcse.errors import ConfigError
from hardcse.index import CorpusIndex, duplicate_groups, encode_corpus
from hardcse.objectives.base import STAGES, ContrastiveBatch, HardCSELoss, Part, pairwise_cosine
from hardcse.objectives.hsimcse import CPU_HSIMCSE, HSIMCSE_PRESETS, HSimCSEConfig, build_hsimcse, hsimcse_parts
from hardcse.objectives.parts.adversarial import AdversarialPositive
from hardcse.objectives.parts.corpus_index import (
    CorpusIndexConfig,
    CorpusIndexNegative,
    IndexRefreshHook,
    bank_sample,
)
from hardcse.objectives.parts.in_batch import HardestInBatchNegative, hardest_in_batch
from hardcse.objectives.parts.quadruplet import QuadrupletHinge
from hardcse.training.callbacks import MethodHooksCallback

TAU = 0.05


# -- hand computations (plain numpy loops, written independently of the code) ---------------
def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _hand_adv_gradient(a: np.ndarray, z1: np.ndarray, tau: float) -> np.ndarray:
    """d/da of mean_i CE(cos(a_i, z1_j)/tau, i): sum_j (P_ij - 1[i=j]) / (N tau) * dcos/da_i,
    with dcos(a, b)/da = b / (|a||b|) - cos(a, b) a / |a|^2."""
    n = len(a)
    grad = np.zeros_like(a)
    for i in range(n):
        logits = np.array([_cos(a[i], z1[j]) / tau for j in range(n)])
        prob = np.exp(logits - logits.max())
        prob /= prob.sum()
        for j in range(n):
            dcos = (
                z1[j] / (np.linalg.norm(a[i]) * np.linalg.norm(z1[j]))
                - _cos(a[i], z1[j]) * a[i] / np.linalg.norm(a[i]) ** 2
            )
            grad[i] += (prob[j] - (1.0 if i == j else 0.0)) / (n * tau) * dcos
    return grad


Z1 = np.array([[1.0, 0.2, 0.0], [0.9, 0.4, 0.1], [0.0, 1.0, 0.5]])
Z2 = np.array([[0.8, 0.5, 0.1], [1.0, 0.1, 0.0], [0.1, 0.9, 0.6]])
BANK = np.array(
    [
        [1, 0, 0],
        [0, 1, 0],
        [0, 0, 1],
        [0.7, 0.7, 0],
        [0.6, 0, 0.8],
        [0, 0.6, 0.8],
        [-1, 0, 0],
        [0.8, 0.6, 0],
        [0.6, 0.8, 0],
        [0, -1, 0],
    ],
    dtype=np.float64,
)
BANK = BANK / np.linalg.norm(BANK, axis=1, keepdims=True)
TEXTS = [f"sentence {i}" for i in range(10)]
TEXTS[8] = TEXTS[0]  # row 8 duplicates row 0
IDS = [0, 7, 1]  # corpus rows of the three batch sentences: each one's own nearest bank row


def _hand_corpus_mean(z1: np.ndarray, ids: list[int], top: int = 3) -> np.ndarray:
    out = []
    for i, q in enumerate(z1):
        banned = {r for r in range(10) if TEXTS[r] == TEXTS[ids[i]]}
        ranked = [r for r in np.argsort(-(BANK @ q), kind="stable") if r not in banned]
        out.append(BANK[ranked[:top]].mean(axis=0))
    return np.array(out)


def _index() -> CorpusIndex:
    return CorpusIndex("flat", duplicate_group=duplicate_groups(TEXTS)).build(BANK.astype(np.float32))


def _config(**changes) -> HSimCSEConfig:
    return dataclasses.replace(HSimCSEConfig(), **changes)


def _parts(config: HSimCSEConfig) -> list[Part]:
    """The four HSimCSE parts around a corpus index miner over :data:`BANK`."""
    return hsimcse_parts(config, CorpusIndexNegative(config.corpus_index(), _index(), owner="hsimcse"))


def _miner(parts: list[Part]) -> CorpusIndexNegative:
    return next(p for p in parts if isinstance(p, CorpusIndexNegative))


def _apply(parts: list[Part], batch: ContrastiveBatch) -> None:
    """What a step does with the parts: by stage, in recipe order within a stage."""
    for part in sorted(parts, key=lambda p: STAGES.index(p.stage)):
        part(batch)


def _batch(z1: torch.Tensor, z2: torch.Tensor, ids=IDS, step: int = 0) -> ContrastiveBatch:
    return ContrastiveBatch(
        z1=z1,
        z2=z2,
        sim=pairwise_cosine(z1, z2),
        ids=None if ids is None else torch.tensor(ids),
        step=step,
        temperature=TAU,
    )


# -- adversarial positive --------------------------------------------------------------------
def test_adversarial_step_is_the_raw_gradient_times_step():
    adv = AdversarialPositive(step_size=3.0, init="zero", iters=1)
    z_hat, start = adv.perturb(
        torch.tensor(Z1, dtype=torch.float32), torch.tensor(Z2, dtype=torch.float32), TAU, step=0
    )
    grad = _hand_adv_gradient(Z2, Z1, TAU)
    move = (z_hat - start).double().numpy()
    assert np.allclose(start.numpy(), Z2, atol=1e-7)
    assert np.allclose(move, 3.0 * grad, atol=1e-4)
    # direction = gradient direction (ascent), size = 3 * |grad|
    for i in range(3):
        assert _cos(move[i], grad[i]) > 0.9999
        assert math.isclose(np.linalg.norm(move[i]), 3.0 * np.linalg.norm(grad[i]), rel_tol=1e-4, abs_tol=1e-6)
    assert not z_hat.requires_grad


def test_adversarial_offset_is_a_seeded_unit_vector_and_step_uses_it():
    adv = AdversarialPositive(step_size=3.0, init="unit_uniform", iters=1, seed=7)
    z1 = torch.tensor(Z1, dtype=torch.float32)
    z2 = torch.tensor(Z2, dtype=torch.float32)
    z_hat, start = adv.perturb(z1, z2, TAU, step=5)
    offset = (start - z2).numpy()
    assert np.allclose(np.linalg.norm(offset, axis=1), 1.0, atol=1e-6)
    grad = _hand_adv_gradient(start.double().numpy(), Z1, TAU)
    assert np.allclose((z_hat - start).numpy(), 3.0 * grad, atol=1e-4)
    again, _ = AdversarialPositive(3.0, "unit_uniform", 1, seed=7).perturb(z1, z2, TAU, step=5)
    other, _ = adv.perturb(z1, z2, TAU, step=6)
    assert torch.equal(z_hat, again) and not torch.allclose(z_hat, other)


def test_adversarial_gradient_respects_the_analytical_bound():
    # |grad_i| <= 2 / (N tau |a_i|) with the mean reduction.
    gen = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(8, 16, generator=gen), torch.randn(8, 16, generator=gen)
    z_hat, start = AdversarialPositive(1.0, "unit_uniform", 1).perturb(z1, z2, TAU, step=0)
    assert ((z_hat - start).norm(dim=1) <= 2 / (8 * TAU * start.norm(dim=1)) + 1e-6).all()


def test_adversarial_step_leaves_the_training_graph_alone():
    z1 = torch.tensor(Z1, dtype=torch.float32, requires_grad=True)
    z2 = torch.tensor(Z2, dtype=torch.float32, requires_grad=True)
    with torch.no_grad():  # also works under no_grad (evaluation forwards)
        z_hat, _ = AdversarialPositive(3.0, "zero", 1).perturb(z1, z2, TAU, step=0)
    assert z1.grad is None and z2.grad is None and not z_hat.requires_grad


def test_adversarial_step_is_fp32_under_autocast():
    z1 = torch.tensor(Z1, dtype=torch.float32)
    z2 = torch.tensor(Z2, dtype=torch.float32)
    plain, _ = AdversarialPositive(3.0, "zero", 1).perturb(z1, z2, TAU, step=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, _ = AdversarialPositive(3.0, "zero", 1).perturb(z1, z2, TAU, step=0)
    assert mixed.dtype == torch.float32 and torch.allclose(plain, mixed, atol=1e-6)


# -- negatives -------------------------------------------------------------------------------
def test_in_batch_hardest_negative_is_the_off_diagonal_max():
    sim = torch.tensor([[0.9, 0.2, 0.5], [0.1, 0.8, -0.3], [0.7, 0.6, 0.95]], requires_grad=True)
    m = hardest_in_batch(sim)
    assert torch.allclose(m, torch.tensor([0.5, 0.1, 0.7]))
    m.sum().backward()
    expected = torch.zeros(3, 3)
    expected[0, 2] = expected[1, 0] = expected[2, 0] = 1.0
    assert torch.equal(sim.grad, expected)


def test_corpus_negative_is_the_top3_mean_without_self_or_duplicates():
    corpus = CorpusIndexNegative(CorpusIndexConfig(k=7, top_mean=3, exclude_self=True), _index())
    n_bar = corpus.search(torch.tensor(Z1, dtype=torch.float32) * 4.0, torch.tensor(IDS))
    assert np.allclose(n_bar.numpy(), _hand_corpus_mean(Z1, IDS), atol=1e-6)
    assert not ({0, 8} & set(corpus.last_ids[0].tolist()))
    assert 7 not in corpus.last_ids[1] and 1 not in corpus.last_ids[2]
    with pytest.raises(ConfigError):
        corpus.search(torch.tensor(Z1, dtype=torch.float32), None)


# -- the quadruplet hinge --------------------------------------------------------------------
def test_quadruplet_value_gradient_and_diagnostics():
    z1 = torch.tensor(Z1, dtype=torch.float64, requires_grad=True)
    z2 = torch.tensor(Z2, dtype=torch.float64, requires_grad=True)
    batch = _batch(z1.float(), z2.float())
    _apply(_parts(_config(adv_init="zero")), batch)
    loss = batch.losses["quad"]
    loss.backward()

    # Hand: z_hat and n_bar are constants; m, p, q by hand cosines.
    z_hat = Z2 + 3.0 * _hand_adv_gradient(Z2, Z1, TAU)
    n_bar = _hand_corpus_mean(Z1, IDS)
    m = [max(_cos(Z1[i], Z2[j]) for j in range(3) if j != i) for i in range(3)]
    p = [_cos(Z1[i], z_hat[i]) for i in range(3)]
    q = [_cos(Z1[i], n_bar[i]) for i in range(3)]
    hinge = [max(0.0, 0.9 * m[i] + 0.11 * q[i] - p[i]) for i in range(3)]
    assert hinge[0] > 0 and hinge[1] > 0 and hinge[2] == 0  # the example has both cases
    assert math.isclose(float(loss.detach()), 0.22 * sum(hinge) / 3, rel_tol=1e-5)

    d = batch.diagnostics
    assert math.isclose(d["quad"], sum(hinge) / 3, rel_tol=1e-5)
    assert math.isclose(d["m_mean"], sum(m) / 3, rel_tol=1e-5)
    assert math.isclose(d["p_mean"], sum(p) / 3, rel_tol=1e-4)
    assert math.isclose(d["q_mean"], sum(q) / 3, rel_tol=1e-5)
    assert math.isclose(d["hinge_active"], 2 / 3, rel_tol=1e-6)
    step = np.linalg.norm(z_hat - Z2, axis=1).mean()
    assert math.isclose(d["adv_displacement"], step, rel_tol=1e-4)
    assert math.isclose(d["adv_norm_offset"], step, rel_tol=1e-4)  # zero offset: same move
    assert d["retrieval_ms"] >= 0 and d["index_build_s"] == 0.0

    # Gradient: a hand loss in which z_hat and n_bar are constants gives the same gradients
    # (so neither carries gradient); z2 gets gradient only through m.
    h1 = z1.detach().clone().requires_grad_(True)
    h2 = z2.detach().clone().requires_grad_(True)

    def cos_rows(a, b):
        return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))

    sims = torch.stack([cos_rows(h1[i].expand(3, 3), h2) for i in range(3)])
    m_t = torch.stack([torch.max(torch.cat([sims[i, :i], sims[i, i + 1 :]])) for i in range(3)])
    p_t = cos_rows(h1, torch.tensor(z_hat))
    q_t = cos_rows(h1, torch.tensor(n_bar))
    hand = 0.22 * torch.clamp(0.9 * m_t + 0.11 * q_t - p_t, min=0).mean()
    hand.backward()
    assert torch.allclose(z1.grad, h1.grad, atol=1e-5)
    assert torch.allclose(z2.grad, h2.grad, atol=1e-5)
    # Row 2 is inactive and z1_2 appears only in its own (zero) hinge: it gets no gradient.
    assert torch.count_nonzero(z1.grad[2]) == 0


def test_margin_and_weights_are_configurable():
    z1 = torch.tensor(Z1, dtype=torch.float32)
    z2 = torch.tensor(Z2, dtype=torch.float32)
    cfg = _config(adv_init="zero", w_inbatch=0.0, w_corpus=0.0, margin=2.0, quad_weight=1.0)
    batch = _batch(z1, z2)
    _apply(_parts(cfg), batch)
    z_hat = Z2 + 3.0 * _hand_adv_gradient(Z2, Z1, TAU)
    expected = np.mean([2.0 - _cos(Z1[i], z_hat[i]) for i in range(3)])
    assert math.isclose(float(batch.losses["quad"]), expected, rel_tol=1e-5)


def test_determinism_with_a_fixed_seed():
    gen = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(3, 3, generator=gen), torch.randn(3, 3, generator=gen)
    results = []
    for _ in range(2):
        batch = _batch(z1, z2, step=11)
        _apply(_parts(_config(seed=5)), batch)
        results.append((float(batch.losses["quad"]), batch.diagnostics["p_mean"]))
    assert results[0] == results[1]
    batch = _batch(z1, z2, step=12)
    _apply(_parts(_config(seed=5)), batch)
    assert batch.diagnostics["p_mean"] != results[0][1]


def test_missing_row_ids_are_a_clear_error_unless_exclusion_is_off():
    z = torch.tensor(Z1, dtype=torch.float32)
    with pytest.raises(ConfigError, match="label"):
        _apply(_parts(_config()), _batch(z, z, ids=None))
    batch = _batch(z, z, ids=None)
    _apply(_parts(_config(exclude_self=False)), batch)
    assert "quad" in batch.losses


def test_the_parts_are_separate_and_describe_themselves():
    parts = _parts(_config(k=3, margin=0.5))
    assert [(p.name, p.stage) for p in parts] == [
        ("adversarial_positive", "positive"),
        ("hardest_in_batch_negative", "negative"),
        ("corpus_index_negative", "negative"),
        ("quadruplet_hinge", "term"),
    ]
    assert all(p.title == "HSimCSE" and "hsimcse2023" in p.citation for p in parts)
    assert parts[0].get_config_dict() == {
        "step_size": 3.0, "init": "unit_uniform", "iters": 1, "seed": 42, "key": "adversarial"
    }  # fmt: skip
    assert parts[2].get_config_dict()["k"] == 3 and parts[2].get_config_dict()["key"] == "corpus"
    assert parts[3].get_config_dict() == {
        "weight": 0.22, "w_inbatch": 0.9, "w_corpus": 0.11, "margin": 0.5,
        "positive": "adversarial", "in_batch": "in_batch_hardest", "corpus": "corpus",
    }  # fmt: skip
    # HSimCSE's index settings are the corpus index miner's own config (no HSimCSE config inside).
    assert _config(k=5, bank_size=9).corpus_index() == CorpusIndexConfig(k=5, bank_size=9)


def test_the_hinge_reads_whatever_positive_and_negatives_were_injected():
    """The hinge over hand-published cosines and embeddings, and a clear error for a missing one."""
    z1 = torch.tensor(Z1, dtype=torch.float32)
    z2 = torch.tensor(Z2, dtype=torch.float32)
    batch = _batch(z1, z2)
    batch.add_positive("mine", torch.tensor([0.9, 0.2, 0.5]))  # cosines
    batch.add_hard_negative("in_batch_hardest", torch.tensor([0.4, 0.3, 0.1]))
    batch.add_hard_negative("corpus", z2)  # an embedding: its cosine to z1 is taken
    QuadrupletHinge(weight=1.0, w_inbatch=1.0, w_corpus=1.0, positive="mine")(batch)
    q = [_cos(Z1[i], Z2[i]) for i in range(3)]
    expected = np.mean([max(0.0, m + q[i] - p) for i, (m, p) in enumerate([(0.4, 0.9), (0.3, 0.2), (0.1, 0.5)])])
    assert math.isclose(float(batch.losses["quad"]), expected, rel_tol=1e-5)
    with pytest.raises(ConfigError, match="no part of the recipe publishes the hard negative 'in_batch_hardest'"):
        QuadrupletHinge()(_batch(z1, z2))
    with pytest.raises(ConfigError, match="two parts of the recipe publish the hard negative 'corpus'"):
        batch.add_hard_negative("corpus", z2)


def test_the_corpus_index_miner_works_without_hsimcse(tiny_model):
    """Built from its own config (any method may inject it), refreshed by its hook."""
    from hardcse.objectives.parts.corpus_index import build_corpus_index

    config = CorpusIndexConfig(k=2, top_mean=2, index_mode="refresh", refresh_steps=2)
    miner, hooks = build_corpus_index(config, tiny_model, SENTENCES, batch_size=4, show_progress=False, key="near")
    assert miner.index.index is None and isinstance(hooks[0], IndexRefreshHook)
    state = TrainerState()
    state.max_steps, state.global_step = 10, 0
    MethodHooksCallback(hooks).on_train_begin(None, state, None, model=tiny_model)
    z = torch.randn(4, 32, generator=torch.Generator().manual_seed(0))
    batch = _batch(z, z, ids=[0, 1, 2, 3])
    miner(batch)
    assert set(batch.hard_negatives) == {"near"} and batch.hard_negatives["near"].shape == (4, 32)
    assert {"retrieval_ms", "index_build_s"} <= set(batch.diagnostics)
    with pytest.raises(ConfigError, match="corpus index k must be at least 1"):
        build_corpus_index(CorpusIndexConfig(k=0), tiny_model, SENTENCES)
    with pytest.raises(ConfigError, match="set corpus index exclude_self to false"):
        miner(_batch(z, z, ids=None))


def test_config_validation():
    with pytest.raises(ConfigError):
        _config(index_mode="live").validate()
    with pytest.raises(ConfigError):
        _config(top_mean=8, k=7).validate()
    with pytest.raises(ConfigError):
        _config(adv_init="gaussian").validate()


def test_presets_are_valid_configs():
    from hardcse.training.config import TrainConfig

    for preset in HSIMCSE_PRESETS.values():
        # Every key is a training setting or a method's settings, every value of its type.
        assert isinstance(TrainConfig.from_dict(preset).method_configs()["hsimcse"], HSimCSEConfig)
        HSimCSEConfig(**preset["hsimcse"]).validate()
    official = HSIMCSE_PRESETS["hsimcse-roberta-base"]
    assert (official["model"], official["batch_size"], official["lr"], official["eval_steps"]) == (
        "roberta-base",
        64,
        2e-5,
        125,
    )
    cfg = HSimCSEConfig(**CPU_HSIMCSE)
    assert (cfg.adv_step, cfg.k, cfg.top_mean, cfg.w_inbatch, cfg.w_corpus, cfg.quad_weight) == (
        3.0,
        7,
        3,
        0.9,
        0.11,
        0.22,
    )


def test_restored_bank_fingerprint_is_checked():
    z = torch.tensor(Z1, dtype=torch.float32)
    parts = _parts(_config())
    state = {k: v.clone() for k, v in _miner(parts).state_dict().items()}
    assert {"refresh_count", "built_at_step", "bank_fingerprint"} <= set(state)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _apply(parts, _batch(z, z))  # same bank: silent
    other = _parts(_config())
    _miner(other).bank_fingerprint[2] += 5.0  # as if restored from a run with another bank
    with pytest.warns(UserWarning, match="bank differs"):
        _apply(other, _batch(z, z))


# -- with a real (tiny) encoder --------------------------------------------------------------
SENTENCES = [
    "the cat sits on the house",
    "a dog runs in the city",
    "the king of the state",
    "she reads a new book",
    "music and film",
    "the cat sits on the house",
    "two red birds sing",
    "the river is blue",
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_training_model(tmp_path_factory.mktemp("tiny") / "bert")


def test_official_bank_comes_from_the_backbone_without_head(tiny_model):
    parts, hooks = build_hsimcse(_config(k=3), tiny_model, SENTENCES, batch_size=4, show_progress=False)
    assert hooks == [] and [type(p) for p in parts] == [
        AdversarialPositive,
        HardestInBatchNegative,
        CorpusIndexNegative,
        QuadrupletHinge,
    ]
    backbone, tokenizer = tiny_model[0].auto_model, tiny_model[0].tokenizer
    backbone.eval()
    with torch.no_grad():
        enc = tokenizer(SENTENCES, padding=True, truncation=True, max_length=32, return_tensors="pt")
        cls = backbone(**enc).last_hidden_state[:, 0]
    backbone.train()
    expected = (cls / cls.norm(dim=1, keepdim=True)).numpy()
    assert np.allclose(_miner(parts).index.vectors, expected, atol=1e-5)
    assert tiny_model.training


def test_loss_end_to_end_on_the_tiny_encoder(tiny_model):
    parts, _ = build_hsimcse(_config(k=3), tiny_model, SENTENCES, batch_size=4, show_progress=False)
    loss = HardCSELoss(tiny_model, parts=parts, temperature=TAU)
    features = tiny_model.preprocess(SENTENCES[:4])
    out = loss([features], labels=torch.arange(4))
    assert set(out) == {"infonce", "quad"}
    sum(out.values()).backward()
    head_grad = tiny_model[2].linear.weight.grad
    assert head_grad is not None and torch.isfinite(head_grad).all()
    tiny_model.zero_grad()
    assert {"adv_displacement", "hinge_active", "retrieval_ms"} <= set(loss.last_diagnostics)
    assert {"parts.2.refresh_count", "parts.2.bank_fingerprint"} <= set(loss.state_dict())


def test_refresh_callback_rebuilds_every_r_steps_and_on_resume(tiny_model):
    cfg = _config(index_mode="refresh", refresh_steps=5, k=3)
    parts, hooks = build_hsimcse(cfg, tiny_model, SENTENCES, batch_size=4, show_progress=False)
    part = _miner(parts)
    assert isinstance(hooks[0], IndexRefreshHook) and part.index.index is None  # built at train begin
    callback = MethodHooksCallback(hooks)  # what the trainer runs
    state = TrainerState()
    state.max_steps = 20
    state.global_step = 0
    callback.on_train_begin(None, state, None, model=tiny_model)
    first = part.index.vectors.copy()
    expected = encode_corpus(tiny_model, SENTENCES, batch_size=3, mode="refresh", show_progress=False)
    assert np.allclose(first, expected, atol=1e-6)
    assert int(part.refresh_count) == 0 and int(part.built_at_step) == 0 and tiny_model.training

    with torch.no_grad():
        tiny_model[2].linear.weight.mul_(3.0)  # "training" changed the model
    for step in (1, 2, 3, 4):
        state.global_step = step
        callback.on_step_end(None, state, None, model=tiny_model)
    assert np.array_equal(part.index.vectors, first)  # not yet
    state.global_step = 5
    callback.on_step_end(None, state, None, model=tiny_model)
    assert int(part.refresh_count) == 1 and int(part.built_at_step) == 5
    assert not np.allclose(part.index.vectors, first, atol=1e-4) and tiny_model.training
    z = torch.randn(3, 32)
    batch = _batch(z, z, ids=[0, 1, 2])
    part(batch)
    assert batch.diagnostics["index_build_s"] > 0  # cumulative build seconds
    state.global_step = 20  # the last step: no rebuild
    callback.on_step_end(None, state, None, model=tiny_model)
    assert int(part.refresh_count) == 1

    # Resume at step 7 (after the step-5 refresh, buffers restored): rebuilt from the model.
    banks = []
    for _ in range(2):
        parts2, hooks2 = build_hsimcse(cfg, tiny_model, SENTENCES, batch_size=4, show_progress=False)
        miner2 = _miner(parts2)
        miner2.load_state_dict(part.state_dict())
        state.global_step = 7
        MethodHooksCallback(hooks2).on_train_begin(None, state, None, model=tiny_model)
        assert int(miner2.refresh_count) == 2 and int(miner2.built_at_step) == 7
        banks.append(miner2.index.vectors.copy())
    assert np.array_equal(banks[0], banks[1])
    with torch.no_grad():
        tiny_model[2].linear.weight.div_(3.0)


def test_bank_sample_keeps_corpus_order_and_maps_duplicates():
    corpus = ["a", "b", "a", "c", "d", "e", "f", "g"]
    bank, bank_row = bank_sample(corpus, 4, seed=3)
    rows = np.sort(np.random.default_rng(3).choice(8, size=4, replace=False))
    assert bank == [corpus[i] for i in rows]
    for i, text in enumerate(corpus):
        # every corpus row maps to a bank row with its text (a duplicate's counts), else -1
        assert (bank[bank_row[i]] == text) if text in bank else bank_row[i] == -1
    assert bank_sample(corpus, None, 3) == (corpus, None) and bank_sample(corpus, 8, 3) == (corpus, None)
    with pytest.raises(ConfigError):
        HSimCSEConfig(bank_size=0).validate()


def test_sampled_bank_excludes_self_through_the_row_map(tiny_model):
    cfg = _config(k=3, bank_size=5, seed=42)  # explicit: the sample is re-drawn below with cfg.seed
    parts, _ = build_hsimcse(cfg, tiny_model, SENTENCES, batch_size=4, show_progress=False)
    part = _miner(parts)
    assert part.index.size == 5 and float(part.build_seconds) > 0
    bank, bank_row = bank_sample(SENTENCES, 5, cfg.seed)
    vectors = torch.from_numpy(part.index.vectors.copy())
    in_bank = [i for i in range(len(SENTENCES)) if bank_row[i] >= 0]
    # Query with each sampled sentence's own bank vector: without exclusion it would be its own top hit.
    queries = vectors[bank_row[in_bank]]
    part.search(queries, torch.tensor(in_bank))
    for b, i in enumerate(in_bank):
        assert bank_row[i] not in part.last_ids[b].tolist()
    assert bank == [
        SENTENCES[i] for i in np.sort(np.random.default_rng(cfg.seed).choice(len(SENTENCES), 5, replace=False))
    ]


def test_method_seed_follows_the_run_seed_unless_set(tiny_model):
    """Offsets, bank sample and IVF seed come from the run's seed when ``seed`` is None (the
    default); an explicit method seed wins; with neither, 42."""
    assert HSimCSEConfig().seed is None and HSimCSEConfig().seed_for(None) == 42
    built = {}
    for run_seed in (42, 43):
        parts, _ = build_hsimcse(
            _config(k=3, bank_size=5), tiny_model, SENTENCES, batch_size=4, show_progress=False, run_seed=run_seed
        )
        built[run_seed] = parts[0]
        assert _miner(parts).config.seed == run_seed and parts[0].seed == run_seed
        assert _miner(parts).index.seed == run_seed
    offsets = {s: p.offset((4, 8), step=3) for s, p in built.items()}
    assert not torch.allclose(offsets[42], offsets[43])
    # The bank samples of the two run seeds differ (5 of 8 sentences, fixed by the seed).
    assert bank_sample(SENTENCES, 5, 42)[0] != bank_sample(SENTENCES, 5, 43)[0]
    explicit = [
        build_hsimcse(_config(k=3, seed=7), tiny_model, SENTENCES, batch_size=4, show_progress=False, run_seed=r)[0]
        for r in (42, 43)
    ]
    assert [_miner(p).config.seed for p in explicit] == [7, 7]
    assert torch.equal(explicit[0][0].offset((4, 8), 3), explicit[1][0].offset((4, 8), 3))
    # Parts built directly from an unresolved config use the official 42.
    assert _parts(_config())[0].seed == 42
