"""Training and comparing with a user's own pairs: selection on a custom dev file, test pair sets
scored before and after, the comparison report's in-domain columns, and the TSDAE/CT baselines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_sts import write_all
from helpers import WORDS, assert_one_sentence_error, make_tiny_bert, run_cli, snapshot

import hardcse
from hardcse.comparison import run_comparison
from hardcse.data.pairs import load_pair_set
from hardcse.evaluation.evaluator import STSEvaluator
from hardcse.evaluation.predictions import load_predictions
from hardcse.models.loading import load_sentence_model
from hardcse.training.run import train


def _sentence(rng: torch.Generator) -> str:
    idx = torch.randint(0, 60, (int(torch.randint(4, 9, (1,), generator=rng)),), generator=rng).tolist()
    return " ".join(WORDS[i] for i in idx)


def _pairs(path: Path, n: int, seed: int) -> Path:
    rng = torch.Generator().manual_seed(seed)
    rows = ["sentence1\tsentence2\tscore"]
    for i in range(n):
        a = _sentence(rng)
        b = a if i % 4 == 0 else _sentence(rng)  # some identical pairs: a learnable signal
        rows.append(f"{a}\t{b}\t{5.0 if a == b else float(i % 5)}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("domain")
    rng = torch.Generator().manual_seed(1)
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(_sentence(rng) for _ in range(240)) + "\n", encoding="utf-8")
    return {
        "root": root,
        "bert": make_tiny_bert(root / "bert"),
        "data": write_all(root / "data", pairs=6),
        "corpus": corpus,
        "dev": _pairs(root / "dev.tsv", 40, seed=2),
        "test": _pairs(root / "test.jsonl.tsv", 30, seed=3),
    }


def _values(setup, out: Path, **kw) -> dict:
    values = dict(
        model=str(setup["bert"]),
        corpus=[str(setup["corpus"])],
        data_dir=str(setup["data"]),
        steps=6,
        eval_steps=2,
        batch_size=16,
        lr=5e-4,
        eval_batch_size=256,
        save_total_limit=4,
        test_tasks=["STSBenchmark"],
        dev=str(setup["dev"]),
        test=[str(setup["test"])],
        output=str(out),
    )
    values.update(kw)
    return values


@pytest.fixture(scope="module")
def run(setup):
    out = setup["root"] / "run"
    results = train(hardcse.make_config(**_values(setup, out)), show_progress=False)
    return out, results


@pytest.mark.slow
def test_selection_uses_the_custom_dev_file(setup, run):
    out, results = run
    assert results["dev_set"] == "dev.tsv"
    dev_points = {e["step"]: e["stsb_dev"] for e in results["history"] if "stsb_dev" in e}
    assert sorted(dev_points) == [0, 2, 4, 6]
    # The kept checkpoint is the best of the trained ones on the dev file ...
    trained = {s: v for s, v in dev_points.items() if s > 0}
    assert results["best_step"] == max(trained, key=trained.get)
    assert results["stsb_dev_best"] == pytest.approx(max(trained.values()))
    # ... and the exported model scores that value on the dev file again.
    evaluator = STSEvaluator(pair_set=load_pair_set(str(setup["dev"]), "dev"), batch_size=256)
    exported = load_sentence_model(str(out / "model"))
    assert evaluator(exported)["dev_spearman"] == pytest.approx(results["stsb_dev_best"], abs=1e-3)
    # The untrained score at step 0 is the dev file's too, not STS-B dev's.
    untrained = evaluator(load_sentence_model(str(setup["bert"]), pooling="cls"))["dev_spearman"]
    assert dev_points[0] == pytest.approx(untrained, abs=1e-3)


@pytest.mark.slow
def test_test_pairs_are_scored_before_and_after(setup, run):
    out, results = run
    name = "test.jsonl.tsv"
    for side in (results["start"], results["test"]):
        entry = side["pairs"][name]
        assert entry["pairs"] == 30 and entry["low"] <= entry["spearman"] <= entry["high"]
    assert list(results["test"]["tasks"]) == ["STSBenchmark"]  # next to the named task
    predictions = load_predictions(out / "test_predictions.npz")
    gold, cosine = predictions[f"pairs:{name}"]["pairs"]
    assert len(gold) == len(cosine) == 30
    assert "pair_cosines" not in results["start"]  # kept in start.json only
    assert len(json.loads((out / "start.json").read_text())["pair_cosines"][name]) == 30
    assert name in (out / "results.md").read_text()


@pytest.mark.slow
def test_tasks_none_scores_only_the_pairs(setup, monkeypatch, capsys):
    out = setup["root"] / "only-pairs"
    args = ["train", "--model", str(setup["bert"]), "--corpus", str(setup["corpus"]), "--data-dir", str(setup["data"])]
    args += ["--steps", "2", "--eval-steps", "2", "--batch-size", "16", "--tasks", "none", "--quiet"]
    args += ["--dev", str(setup["dev"]), "--test", str(setup["test"]), "--output", str(out)]
    code, stdout, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert results["test"]["tasks"] == {} and list(results["test"]["pairs"]) == ["test.jsonl.tsv"]
    assert "test.jsonl.tsv" in stdout and "best dev.tsv" in stdout


def test_bad_dev_file_is_refused_before_anything_is_created(setup, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "dev.tsv"
    bad.write_text("a\tb\t3\nc\td\t3\ne\tf\t3\n", encoding="utf-8")
    before = snapshot(tmp_path)
    args = ["train", "--model", str(setup["bert"]), "--corpus", str(setup["corpus"]), "--data-dir", str(setup["data"])]
    args += ["--dev", str(bad), "--output", str(tmp_path / "out"), "--quiet"]
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert_one_sentence_error(code, err, "the same score")
    assert code == 2 and snapshot(tmp_path) == before


def test_leakage_is_warned(setup, tmp_path, caplog):
    from hardcse.training.run import load_run_pairs

    config = hardcse.make_config(**_values(setup, tmp_path / "x"))
    dev = load_pair_set(str(setup["dev"]), "dev")
    corpus = [dev.pairs.sentences1[1], "something else entirely"]
    with caplog.at_level("WARNING", logger="hardcse"):
        load_run_pairs(config, setup["data"], corpus)
    assert any("share 1 of their" in r.getMessage() and "dev.tsv" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_comparison_reports_in_domain_scores_next_to_the_seven_tasks(setup):
    out = setup["root"] / "cmp"
    overrides = _values(setup, out)
    overrides.pop("output")
    overrides.update(test_tasks=None, batch_size=32)  # ClusterNS' cpu settings need 32 sentences a batch
    summary = run_comparison(["simcse", "clusterns"], seeds=2, output=out, overrides=overrides, show_progress=False)
    name = "test.jsonl.tsv"
    entry = summary["pair_sets"][name]
    assert entry["pairs"] == 30 and summary["dev_set"] == "dev.tsv"
    runs = {label: [json.loads((out / f"{label}-s{s}" / "results.json").read_text()) for s in (42, 43)]
            for label in ("simcse", "clusterns")}
    untrained = runs["simcse"][0]["start"]["pairs"][name]["spearman"]
    assert entry["untrained"] == pytest.approx(untrained)
    for label, results in runs.items():
        values = [r["test"]["pairs"][name]["spearman"] for r in results]
        stats = entry["recipes"][label]
        assert stats["score"]["values"] == values
        vu = stats["vs_untrained"]
        assert vu["delta"] == pytest.approx(np.mean(values) - untrained)
        # Resample 0 is the set itself: the bootstrap's observed difference is the difference.
        assert vu["bootstrap"]["delta"] == pytest.approx(vu["delta"], abs=1e-6)
    vs = entry["recipes"]["clusterns"]["vs_baseline"]
    simcse = [r["test"]["pairs"][name]["spearman"] for r in runs["simcse"]]
    clusterns = [r["test"]["pairs"][name]["spearman"] for r in runs["clusterns"]]
    assert vs["delta"] == pytest.approx(np.mean(clusterns) - np.mean(simcse))
    assert vs["bootstrap"]["delta"] == pytest.approx(vs["delta"], abs=1e-6)
    assert "vs_baseline" not in entry["recipes"]["simcse"]
    report = (out / "report.md").read_text()
    section = report.split("## Test pairs (in-domain) and the seven tasks")[1].split("## Test scores")[0]
    assert f"{name} (30 pairs)" in section and "Δ untrained [95% CI]" in section and " Avg |" in section
    for label in ("untrained", "simcse", "clusterns"):
        assert f"| {label} " in section
    assert f"{summary['recipes']['clusterns']['avg']['mean']:.2f} ±" in section  # the seven-task Avg beside it


@pytest.mark.slow
@pytest.mark.parametrize("st_loss", ["tsdae", "ct"])
def test_sentence_transformers_baselines_train_and_resume_state(setup, st_loss):
    out = setup["root"] / f"st-{st_loss}"
    values = _values(setup, out, st_loss=st_loss, steps=4, batch_size=8)
    if st_loss == "tsdae":
        values["lr_schedule"] = "constant"
    results = train(hardcse.make_config(**values), show_progress=False)
    assert results["steps"] == 4 and "test.jsonl.tsv" in results["test"]["pairs"]
    model_files = {p.name for p in (out / "model").iterdir()}
    assert "modules.json" in model_files  # a plain sentence-transformers model, no decoder or copy
    assert not any("decoder" in n for n in model_files)
