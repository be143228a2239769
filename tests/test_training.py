"""Training end to end on a tiny random BERT: outputs, export, resume and the error cases."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import WORDS, make_tiny_bert
from sentence_transformers import SentenceTransformer

import hardcse
from hardcse.errors import ConfigError, DataError, TrainingError
from hardcse.models.encoder import export_model
from hardcse.models.head import TrainOnlyHead
from hardcse.models.representation import Pooled
from hardcse.training.run import train


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert")


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    rng = torch.Generator().manual_seed(0)
    words = WORDS[:60]
    lines = []
    for _ in range(400):
        n = int(torch.randint(4, 10, (1,), generator=rng))
        idx = torch.randint(0, len(words), (n,), generator=rng).tolist()
        lines.append(" ".join(words[i] for i in idx))
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _config(tiny_bert, tiny_corpus, out, data_dir, **kw):
    values = dict(
        model=str(tiny_bert),
        corpus=[str(tiny_corpus)],
        steps=12,
        eval_steps=4,
        batch_size=16,
        lr=5e-4,
        output=str(out),
        data_dir=str(data_dir),
        eval_batch_size=256,
        test_tasks=["STSBenchmark", "SICKRelatedness"],
    )
    values.update(kw)
    return hardcse.make_config(**values)


def test_head_trains_only(tiny_bert):
    model = Pooled().build(str(tiny_bert))
    assert isinstance(model[-1], TrainOnlyHead)
    model.train()
    feats = model.tokenize(["the dog plays"])
    with torch.no_grad():
        trained = model(dict(feats))["sentence_embedding"]
        model.eval()
        raw = model(dict(model.tokenize(["the dog plays"])))["sentence_embedding"]
    # In training the head's tanh bounds every coordinate; in eval the raw CLS passes through.
    assert trained.abs().max() <= 1.0
    assert not torch.allclose(trained, raw)


def test_export_has_no_head_and_loads_plainly(tiny_bert, tmp_path):
    model = Pooled().build(str(tiny_bert))
    export_model(model, tmp_path / "m", eval_max_seq_length=128)
    loaded = SentenceTransformer(str(tmp_path / "m"))
    assert not any(isinstance(m, TrainOnlyHead) for m in loaded)
    assert loaded.max_seq_length == 128
    model.eval()
    a = model.encode(["the red dog"], convert_to_tensor=True)
    b = loaded.encode(["the red dog"], convert_to_tensor=True)
    assert torch.allclose(a, b, atol=1e-5)


@pytest.fixture(scope="module")
def finished_run(tiny_bert, tiny_corpus, tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("runs") / "run"
    results = train(_config(tiny_bert, tiny_corpus, out, data_dir), show_progress=False)
    return out, results


def test_run_writes_all_outputs(finished_run):
    out, results = finished_run
    for name in ("model", "config.yaml", "results.json", "results.md", "curves.png"):
        assert (out / name).exists(), name
    saved = json.loads((out / "results.json").read_text())
    assert saved["steps"] == 12 and saved["best_step"] in (4, 8, 12)
    assert set(saved["start"]["tasks"]) == set(saved["test"]["tasks"])
    steps = [e["step"] for e in saved["history"] if "loss" in e]
    assert steps == list(range(1, 13))
    assert all("infonce" in e for e in saved["history"] if "loss" in e)
    devs = [e for e in saved["history"] if "stsb_dev" in e]
    assert [e["step"] for e in devs] == [0, 4, 8, 12]
    assert math.isclose(saved["stsb_dev_best"], max(e["stsb_dev"] for e in devs[1:]), abs_tol=1e-9)


def test_exported_model_card_names_the_run(finished_run, tiny_bert):
    # The generic sentence-transformers card is replaced by one naming the base model and the recipe.
    out, results = finished_run
    card = (out / "model" / "README.md").read_text(encoding="utf-8")
    assert "library_name: sentence-transformers" in card and "- simcse" in card
    assert f"Recipe: `{results['recipe']}`" in card and str(tiny_bert) in card
    assert "gao2021simcse" in card and "| this model" in card


def test_loss_decreases(finished_run):
    _, results = finished_run
    losses = [e["loss"] for e in results["history"] if "loss" in e]
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4


def test_export_scores_same_dev_as_training(finished_run, data_dir):
    from hardcse.evaluation.sts import STSEvaluator

    out, results = finished_run
    model = SentenceTransformer(str(out / "model"))
    # Same batch size as in training, so the batches (and their padding) are the same.
    dev = STSEvaluator(data_dir=data_dir, batch_size=256)(model)["stsb_spearman"]
    assert abs(dev - results["stsb_dev_best"]) < 1e-4


def test_config_yaml_reproduces_the_run(finished_run):
    out, _ = finished_run
    cfg = hardcse.make_config(config_file=out / "config.yaml")
    assert cfg.steps == 12 and cfg.lr == 5e-4 and cfg.output == str(out)


def test_existing_output_is_refused_and_kept(finished_run, tiny_bert, tiny_corpus, data_dir):
    out, _ = finished_run
    before = (out / "results.json").read_bytes()
    with pytest.raises(ConfigError, match="already holds a run"):
        train(_config(tiny_bert, tiny_corpus, out, data_dir), show_progress=False)
    assert (out / "results.json").read_bytes() == before


@pytest.mark.slow
def test_resume_reproduces_an_uninterrupted_run(tiny_bert, tiny_corpus, tmp_path, data_dir):
    import shutil

    full = tmp_path / "full"
    reference = train(_config(tiny_bert, tiny_corpus, full, data_dir, save_total_limit=10), show_progress=False)
    # Pretend the run died after its step-8 checkpoint: drop everything written later.
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    shutil.rmtree(cut / "checkpoints" / "checkpoint-12")
    for name in ("model", "results.json", "results.md", "curves.png"):
        path = cut / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    cfg = hardcse.make_config(config_file=cut / "config.yaml", output=str(cut))
    resumed = train(cfg, resume=True, show_progress=False)
    assert resumed["steps"] == 12 and resumed["best_step"] == reference["best_step"]
    assert [e["step"] for e in resumed["history"] if "loss" in e] == list(range(1, 13))
    assert abs(resumed["stsb_dev_best"] - reference["stsb_dev_best"]) < 1e-6
    assert resumed["test"]["avg"] == reference["test"]["avg"]


@pytest.mark.slow
def test_bf16_trains_on_the_cpu(tiny_bert, tiny_corpus, tmp_path, data_dir, monkeypatch):
    # The trainer refuses bf16 on a machine without a GPU unless told it is meant for the CPU.
    if torch.cuda.is_available():
        pytest.skip("checks the CPU path")
    # hardcse refuses bf16 on a CPU that only emulates it (tests/test_precision.py); this checks
    # the trainer's CPU path, so the CPU is taken as native (the tiny model trains in either case).
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"architecture": "x86_64", "avx512_bf16": True})
    cfg = _config(tiny_bert, tiny_corpus, tmp_path / "bf16", data_dir, bf16=True, steps=4, eval_steps=4)
    results = train(cfg, show_progress=False)
    losses = [e["loss"] for e in results["history"] if "loss" in e]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)


def test_fp16_without_a_gpu_is_one_sentence(tiny_bert, tiny_corpus, tmp_path, data_dir):
    if torch.cuda.is_available():
        pytest.skip("checks the CPU path")
    cfg = _config(tiny_bert, tiny_corpus, tmp_path / "fp16", data_dir, fp16=True)
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        train(cfg, show_progress=False)
    assert not (tmp_path / "fp16").exists()


def test_nan_loss_stops_with_clear_error(tiny_bert, tiny_corpus, tmp_path, data_dir):
    cfg = _config(tiny_bert, tiny_corpus, tmp_path / "nan", data_dir, lr=1e9, steps=30, eval_steps=2)
    with pytest.raises(TrainingError, match="NaN"):
        train(cfg, show_progress=False)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "no sentences"),
        (b"\n\n  \n", "no sentences"),
        (b"ok line\n\xff\xfe bad\n", "line 2"),
        (b"a\x00b\n", "NUL"),
    ],
)
def test_bad_corpus(tiny_bert, tmp_path, data_dir, content, message):
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(content)
    with pytest.raises(DataError, match=message):
        train(_config(tiny_bert, corpus, tmp_path / "o", data_dir), show_progress=False)


def test_missing_corpus(tiny_bert, tmp_path, data_dir):
    with pytest.raises(DataError, match="does not exist"):
        train(_config(tiny_bert, tmp_path / "nope.txt", tmp_path / "o", data_dir), show_progress=False)


def test_bad_config_values():
    with pytest.raises(ConfigError, match="unknown recipe"):
        hardcse.make_config(recipe="nope")
    with pytest.raises(ConfigError, match="unknown preset"):
        hardcse.make_config(preset="nope")
    with pytest.raises(ConfigError, match="batch size"):
        hardcse.make_config(batch_size=1)
    with pytest.raises(ConfigError, match="unknown key .bogus. in the options; valid keys are"):
        hardcse.make_config(bogus=1)


def test_yaml_with_unknown_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 3\nbogus_key: 1\n")
    with pytest.raises(ConfigError, match="bogus_key"):
        hardcse.make_config(config_file=path)
