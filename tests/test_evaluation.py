"""STS scoring: hand-computed aggregations, cosine edge cases, tables, evaluate_model and STSEvaluator."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import write_all
from scipy.stats import spearmanr

from hardcse.data.sts import TASKS, load_tasks
from hardcse.errors import ConfigError
from hardcse.evaluation import STSEvaluator, evaluate_model, format_comparison, format_table
from hardcse.evaluation.sts import aggregate, average, cosine_rows, position_limit, spearman100

# Two hand-made subsets.
#   A: gold 1 2 3 4 vs system ranks 1 2 4 3 -> sum d^2 = 2 -> rho = 1 - 6*2/(4*15) = 0.8
#   B: gold 1 2 3 vs system reversed -> rho = -1
#   all: the 7 pooled pairs have tied ranks; rank deviations from the mean 4 are
#        gold   -2.5 -0.5 1.5 3 -2.5 -0.5 1.5
#        system -2.5 -0.5 3 1.5 1.5 -0.5 -2.5
#        sum of products 8.25, sums of squares 26.5 and 26.5 -> rho = 8.25 / 26.5 = 33/106
SUBSETS = {
    "A": (np.array([1.0, 2, 3, 4]), np.array([0.1, 0.2, 0.4, 0.3])),
    "B": (np.array([1.0, 2, 3]), np.array([0.3, 0.2, 0.1])),
}


def test_aggregation_all():
    result = aggregate(SUBSETS, "all")
    assert result["spearman"] == pytest.approx(100 * 33 / 106)
    assert result["pairs"] == 7
    assert result["subsets"] == {"A": pytest.approx(80.0), "B": pytest.approx(-100.0)}


def test_aggregation_mean():
    assert aggregate(SUBSETS, "mean")["spearman"] == pytest.approx((80 - 100) / 2)


def test_aggregation_wmean():
    assert aggregate(SUBSETS, "wmean")["spearman"] == pytest.approx((80 * 4 - 100 * 3) / 7)


def test_hand_values_match_scipy():
    gold = np.concatenate([g for g, _ in SUBSETS.values()])
    system = np.concatenate([s for _, s in SUBSETS.values()])
    assert spearman100(gold, system) == pytest.approx(100 * spearmanr(gold, system)[0])


def test_single_subset_is_the_same_under_every_aggregation():
    one = {"test": SUBSETS["A"]}
    assert [aggregate(one, a)["spearman"] for a in ("all", "mean", "wmean")] == pytest.approx([80.0] * 3)


def test_unknown_aggregation():
    with pytest.raises(ConfigError, match="unknown aggregation 'median'; choose one of all, mean, wmean"):
        aggregate(SUBSETS, "median")


def test_constant_scores_give_nan():
    assert math.isnan(spearman100(np.array([1.0, 2, 3]), np.array([0.5, 0.5, 0.5])))


def test_cosine_rows_and_nan_handling():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [np.nan, 1.0]], dtype=np.float32)
    b = np.array([[0.0, 1.0], [2.0, 2.0], [1.0, 0.0], [0.0, 3.0]], dtype=np.float32)
    cos = cosine_rows(a, b)
    assert cos.dtype == np.float64
    assert cos.tolist() == pytest.approx([0.0, 1.0, 0.0, 1.0])  # zero vector -> 0, NaN entry -> 0


def test_identical_sentences_score_exactly_one(monkeypatch):
    import hardcse.evaluation.sts as sts_module
    from hardcse.data.sts import STSPairs

    # Distinct sentences in first-seen order: a b c d e z x y -> rows 0..7; "z" (row 5) is a zero vector.
    vectors = np.random.default_rng(0).normal(size=(8, 16)).astype(np.float32)
    vectors[5] = 0.0
    monkeypatch.setattr(sts_module, "encode_unique", lambda model, sentences, **kw: vectors[: len(sentences)])
    pairs = STSPairs(
        "test",
        ["a", "b", "c", "d", "e", "z"],
        ["a", "b", "c", "x", "y", "z"],
        [5.0, 4.0, 4.5, 1.0, 2.0, 3.0],
    )
    result = sts_module.score_tasks(None, {"STSBenchmark": {"test": pairs}})
    cos = cosine_rows(vectors[[0, 1, 2, 3, 4, 5]], vectors[[0, 1, 2, 6, 7, 5]])
    assert not np.all(cos[:3] == 1.0)  # float rounding alone would not give exact ties
    cos[:3] = 1.0  # the three identical pairs tie exactly
    assert cos[5] == 0.0  # identical but zero: stays 0
    expected = 100 * spearmanr(pairs.scores, cos)[0]
    assert result["STSBenchmark"]["spearman"] == pytest.approx(expected, abs=1e-12)


def test_average_rounds_each_task_first():
    tasks = {"STS12": {"spearman": 70.004}, "STS13": {"spearman": 70.004}, "STS14": {"spearman": 80.016}}
    assert average(tasks) == pytest.approx((70.0 + 70.0 + 80.02) / 3)


# ---------------------------------------------------------------------------------------------
# Tables


def _result(values: dict[str, float]) -> dict:
    tasks = {t: {"spearman": v, "pairs": 1, "subsets": {}} for t, v in values.items()}
    return {"tasks": tasks, "avg": average(tasks)}


def test_format_table_is_the_papers_table():
    result = _result(dict(zip(TASKS, [68.404, 82.41, 74.38, 80.91, 78.56, 76.85, 72.23], strict=True)))
    lines = format_table(result).splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == [
        "STS12",
        "STS13",
        "STS14",
        "STS15",
        "STS16",
        "STS-B",
        "SICK-R",
        "Avg",
    ]
    assert set(lines[1]) <= set("|-:")
    assert [c.strip() for c in lines[2].strip("|").split("|")] == [
        "68.40",
        "82.41",
        "74.38",
        "80.91",
        "78.56",
        "76.85",
        "72.23",
        "76.25",  # SimCSE-BERT-base, paper Table 5
    ]
    assert len({len(line) for line in lines}) == 1  # aligned columns


def test_format_table_only_present_tasks_and_label():
    table = format_table(_result({"SICKRelatedness": 70.0, "STS13": 80.0}), label="mine")
    header, rule, row = table.splitlines()
    assert [c.strip() for c in header.split("|")[1:-1]] == ["Model", "STS13", "SICK-R", "Avg"]
    assert rule.startswith("|:")
    assert "mine" in row and "75.00" in row


def test_format_comparison_has_signed_delta():
    before = _result({"STS12": 60.0, "STSBenchmark": 70.004})
    after = _result({"STS12": 65.5, "STSBenchmark": 69.0})
    lines = format_comparison(before, after, labels=("base", "simcse")).splitlines()
    assert len(lines) == 5
    assert "base" in lines[2] and "simcse" in lines[3]
    assert [c.strip() for c in lines[4].strip("|").split("|")] == ["delta", "+5.50", "-1.00", "+2.25"]


# ---------------------------------------------------------------------------------------------
# evaluate_model and STSEvaluator on the bundled model and hand-made data


@pytest.fixture(scope="module")
def model():
    from hardcse.models.loading import load_sentence_model

    return load_sentence_model("default", device="cpu")


@pytest.fixture(scope="module")
def fake_dir(tmp_path_factory):
    return write_all(tmp_path_factory.mktemp("sts"))


@pytest.mark.slow
def test_evaluate_model_schema_and_independent_scores(model, fake_dir, monkeypatch):
    calls = []
    original = model.encode

    def spy(sentences, **kwargs):
        calls.append((list(sentences), model.max_seq_length, kwargs))
        return original(sentences, **kwargs)

    monkeypatch.setattr(model, "encode", spy)
    before = model.max_seq_length
    result = evaluate_model(model, data_dir=fake_dir, show_progress=False, model_name="mini")
    monkeypatch.undo()

    assert set(result) == {"model", "pooling", "aggregation", "split", "tasks", "avg", "seconds"}
    assert (result["model"], result["pooling"], result["aggregation"], result["split"]) == (
        "mini",
        "mean",
        "all",
        "test",
    )
    assert list(result["tasks"]) == list(TASKS)
    for entry in result["tasks"].values():
        assert set(entry) == {"spearman", "pairs", "subsets"}
        assert isinstance(entry["spearman"], float) and isinstance(entry["pairs"], int)

    # Each distinct sentence encoded once, in batches sorted by token count, untruncated (512
    # positions); max_seq_length restored afterwards.
    data = load_tasks(data_dir=fake_dir)
    distinct = {s for subsets in data.values() for p in subsets.values() for s in p.sentences1 + p.sentences2}
    encoded = [s for sentences, _, _ in calls for s in sentences]
    assert sorted(encoded) == sorted(distinct)
    assert all(len(sentences) <= 128 for sentences, _, _ in calls) and len(calls) == -(-len(distinct) // 128)
    lengths = [len(model.tokenizer(s)["input_ids"]) for s in encoded]
    assert lengths == sorted(lengths, reverse=True)
    assert {length for _, length, _ in calls} == {position_limit(model)} == {512}
    assert all(kwargs["convert_to_tensor"] for _, _, kwargs in calls)
    assert model.max_seq_length == before == 256

    # Independently: encode each subset's two sides, cosine, scipy Spearman over the pooled year.
    model.max_seq_length = 512
    try:
        for task in ("STS12", "STS16", "SICKRelatedness"):  # several subsets, blank gold lines, CRLF
            subsets = data[task]
            gold, system = [], []
            for name, pairs in subsets.items():
                e1 = model.encode(pairs.sentences1, convert_to_numpy=True)
                e2 = model.encode(pairs.sentences2, convert_to_numpy=True)
                cos = (e1 * e2).sum(1) / np.linalg.norm(e1, axis=1) / np.linalg.norm(e2, axis=1)
                assert result["tasks"][task]["subsets"][name] == pytest.approx(
                    100 * spearmanr(pairs.scores, cos)[0], abs=1e-6
                )
                gold.append(pairs.scores)
                system.append(cos)
            expected = 100 * spearmanr(np.concatenate(gold), np.concatenate(system))[0]
            assert result["tasks"][task]["spearman"] == pytest.approx(expected, abs=1e-6)
    finally:
        model.max_seq_length = before
    assert result["avg"] == pytest.approx(np.mean([round(t["spearman"], 2) for t in result["tasks"].values()]))


@pytest.mark.slow
def test_evaluate_model_aggregations_and_dev_split(model, fake_dir):
    data = load_tasks(["STS12", "STS-B"], fake_dir)
    results = {
        agg: evaluate_model(model, data=data, aggregation=agg, show_progress=False) for agg in ("all", "mean", "wmean")
    }
    subsets = results["all"]["tasks"]["STS12"]["subsets"]
    assert results["mean"]["tasks"]["STS12"]["spearman"] == pytest.approx(np.mean(list(subsets.values())))
    assert len({r["tasks"]["STSBenchmark"]["spearman"] for r in results.values()}) == 1

    dev = evaluate_model(model, data_dir=fake_dir, split="dev", show_progress=False)
    assert list(dev["tasks"]) == ["STSBenchmark", "SICKRelatedness"]
    assert list(dev["tasks"]["STSBenchmark"]["subsets"]) == ["dev"]
    with pytest.raises(ConfigError, match="STS12 only has a test set"):
        evaluate_model(model, tasks=["STS12"], data_dir=fake_dir, split="dev")


@pytest.mark.slow
def test_sts_evaluator_loads_once_and_reports_x100(model, fake_dir, monkeypatch):
    evaluator = STSEvaluator(data_dir=fake_dir)
    assert evaluator.primary_metric == "stsb_spearman" and evaluator.greater_is_better

    monkeypatch.setattr("hardcse.evaluation.evaluator.load_tasks", lambda *a, **k: pytest.fail("reloaded the pairs"))
    model.train()
    metrics = evaluator(model)
    assert model.training  # the trainer's mode is left as it was
    assert list(metrics) == ["stsb_spearman"]
    expected = evaluate_model(model, data=evaluator.data, split="dev", show_progress=False)
    assert metrics["stsb_spearman"] == pytest.approx(expected["tasks"]["STSBenchmark"]["spearman"])
    assert abs(metrics["stsb_spearman"]) > 1  # x100 scale
    model.eval()


@pytest.mark.slow
def test_sts_evaluator_several_tasks(model, fake_dir):
    evaluator = STSEvaluator(tasks=["STS-B", "SICK-R"], data_dir=fake_dir, name="dev")
    metrics = evaluator(model)
    assert evaluator.primary_metric == "dev_spearman"
    assert set(metrics) == {"dev_stsb_spearman", "dev_sickr_spearman", "dev_spearman"}
    assert metrics["dev_spearman"] == pytest.approx((metrics["dev_stsb_spearman"] + metrics["dev_sickr_spearman"]) / 2)


# ---------------------------------------------------------------------------------------------
# Loading models for evaluation


@pytest.mark.slow
def test_st_model_keeps_its_pooling_unless_overridden(model):
    from hardcse.models.loading import describe_pooling, load_sentence_model

    assert [type(m).__name__ for m in model] == ["Transformer", "Pooling", "Normalize"]
    assert describe_pooling(model) == "mean"
    cls = load_sentence_model("default", pooling="cls_before_pooler", device="cpu")
    assert [type(m).__name__ for m in cls] == ["Transformer", "Pooling"]
    assert describe_pooling(cls) == "cls"
    tokens = cls.encode(["a man plays a guitar"], output_value="token_embeddings")[0]
    assert np.allclose(cls.encode(["a man plays a guitar"])[0], tokens[0].numpy(), atol=1e-5)  # raw [CLS]


@pytest.mark.slow
def test_plain_hf_model_gets_cls_pooling(model, tmp_path):
    from hardcse.models.loading import describe_pooling, load_sentence_model

    model[0].auto_model.save_pretrained(tmp_path)
    model[0].tokenizer.save_pretrained(tmp_path)
    plain = load_sentence_model(str(tmp_path), device="cpu")
    assert describe_pooling(plain) == "cls"
    assert describe_pooling(load_sentence_model(str(tmp_path), pooling="max", device="cpu")) == "max"


@pytest.mark.parametrize(
    "name, pooling, error, message",
    [
        ("./no/such/model", None, "DataError", "model './no/such/model' not found: not a local directory"),
        ("no-such-org/no-such-model", None, "DataError", "the Hugging Face hub could not provide it"),
        ("default", "median", "ConfigError", "unknown pooling 'median'; choose one of cls, cls_before"),
    ],
)
def test_model_loading_errors(name, pooling, error, message):
    from hardcse.errors import HardcseError
    from hardcse.models.loading import load_sentence_model

    with pytest.raises(HardcseError) as err:
        load_sentence_model(name, pooling=pooling)
    assert type(err.value).__name__ == error and message in str(err.value)


def test_model_directory_without_model_files(tmp_path):
    from hardcse.errors import DataError
    from hardcse.models.loading import load_sentence_model

    with pytest.raises(DataError, match="has neither modules.json .* nor config.json"):
        load_sentence_model(str(tmp_path))


@pytest.mark.slow
def test_pretokenized_fast_path_equals_encode(model):
    # Every sentence tokenised once, then length-sorted slices through forward: the same vectors
    # as `encode` batch by batch, dropout off even when the model was training, mode restored.
    from hardcse.evaluation import sts

    sentences = [f"sentence number {i} " + "word " * (i % 9) for i in range(300)]
    model.train()
    try:
        fast = sts._encode_pretokenized(model, sentences, batch_size=64, show_progress=False)
        assert fast is not None  # a plain right-padded text encoder takes the fast path
        via_encode = model.encode(sentences, batch_size=64, convert_to_numpy=True)
        assert np.abs(fast - via_encode).max() < 1e-5
        model.train()
        assert np.array_equal(sts.encode_unique(model, sentences, batch_size=64, fused_kernels=False), fast)
        assert model.training
        # oneDNN's fused linear layers (the default): the same vectors to float32 rounding.
        from hardcse.models.fused_linear import fused_kernels_available

        fused = sts.encode_unique(model, sentences, batch_size=64)
        assert (0 if fused_kernels_available() else -1) < np.abs(fused - fast).max() < 1e-5
        assert model.training and not any(type(m).__name__.startswith("Fused") for m in model.modules())
    finally:
        model.eval()


@pytest.mark.slow
def test_pretokenize_in_chunks_equals_one_preprocess_call(model, monkeypatch):
    # Chunks of similar character length, copied into one padded matrix: exactly one call's tensors.
    import torch

    from hardcse.evaluation import sts

    sentences = [f"sentence {i} " + "longer words here " * (i * 7 % 11) + "end" * (i % 3) for i in range(50)]
    monkeypatch.setattr("hardcse.evaluation.encoding.PRETOKENIZE_CHUNK", 7)  # the engine reads its own constant
    calls = []
    original = model.preprocess
    monkeypatch.setattr(model, "preprocess", lambda s: calls.append(len(s)) or original(s))
    merged = sts._pretokenize(model, sentences)
    assert calls[:-1] == [7] * 7 and calls[-1] == 1 and sum(calls) == 50
    expected = original(sentences)
    assert set(merged) == set(expected)
    for key, value in expected.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(merged[key], value), key
        else:
            assert merged[key] == value
    # Without a pad token the padded matrix cannot be rebuilt: the caller tokenises in one call.
    pad = model.tokenizer.pad_token
    model.tokenizer.pad_token = None
    try:
        assert model.tokenizer.pad_token_id is None
        assert sts._pretokenize(model, sentences) is None
    finally:
        model.tokenizer.pad_token = pad
    assert model.tokenizer.pad_token_id == 0
