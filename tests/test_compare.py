"""``hardcse compare``: statistics on hand-worked numbers, and the whole comparison on a tiny BERT and
hand-made STS data (runs, interruption and resume, skipping, a refused config, the report).

The comparison tests share one directory (module fixture) and run in order: an interrupted first
call, a second call that finishes, a third that trains nothing.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import WORDS, assert_one_sentence_error, make_tiny_bert, write_all
from helpers import run_cli as run_entry_point
from transformers import TrainerCallback

from hardcse.comparison import run_comparison
from hardcse.comparison.runner import parse_seeds, seed_text
from hardcse.comparison.stats import (
    bootstrap_summary,
    mean_std,
    paired_bootstrap,
    paired_ttest,
    resample_indices,
)
from hardcse.errors import ConfigError, Interrupted
from hardcse.evaluation.scoring import rowwise_spearman
from hardcse.training.config import dump_yaml

# ---------------------------------------------------------------------------------------------
# Statistics, on numbers worked out by hand


def test_mean_std():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)  # sample std: sqrt((1 + 0 + 1) / 2)
    assert mean_std([5.0]) == (5.0, None)


def test_paired_ttest_hand_worked():
    # Differences 1, 2, 3: mean 2, sd 1, t = 2 / (1 / sqrt 3) = 3.4641 with 2 degrees of freedom;
    # for df = 2 the two-sided p is 1 - t / sqrt(2 + t^2) = 1 - 3.4641 / sqrt(14) = 0.07418.
    assert math.isclose(paired_ttest([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]), 0.07418, abs_tol=1e-5)
    assert math.isclose(paired_ttest([11.0, 12.0, 13.0], [10.0, 10.0, 10.0]), 0.07418, abs_tol=1e-5)
    assert paired_ttest([1.0], [0.0]) is None  # one seed: undefined ("n/a")
    assert paired_ttest([1.0, 2.0], [0.0, 1.0]) is None  # equal differences: zero variance


def test_rowwise_spearman_hand_worked():
    # Ranks differ by d = 0, 1, 1, 0: rho = 1 - 6 * 2 / (4 * 15) = 0.8.
    assert math.isclose(rowwise_spearman(np.array([1, 2, 3, 4]), np.array([1, 3, 2, 4])), 80.0)
    # Tied gold: ranks 1.5, 1.5, 3 against 1, 2, 3 -> 1.5 / sqrt(1.5 * 2) = 0.8660.
    assert math.isclose(rowwise_spearman(np.array([1, 1, 2]), np.array([1, 2, 3])), 86.6025, abs_tol=1e-4)
    rows = rowwise_spearman(np.array([[1, 2, 3], [1, 1, 1]]), np.array([[3, 2, 1], [1, 2, 3]]))
    assert rows[0] == pytest.approx(-100.0) and math.isnan(rows[1])  # constant gold: undefined


def test_resample_indices():
    drawn = resample_indices({"a": 5, "b": 3}, resamples=4, seed=0)
    assert drawn["a"].shape == (4, 5) and drawn["b"].shape == (4, 3)
    assert drawn["a"][0].tolist() == [0, 1, 2, 3, 4]  # resample 0 is the test set itself
    again = resample_indices({"a": 5, "b": 3}, resamples=4, seed=0)
    assert all(np.array_equal(drawn[t], again[t]) for t in drawn)  # fixed seed: reproducible
    assert drawn["a"].min() >= 0 and drawn["a"].max() <= 4


def test_bootstrap_summary_hand_worked():
    summary = bootstrap_summary(np.array([1.0, -1.0, 0.0, 2.0, 3.0]), level=0.5)
    # Observed = resample 0; 2 of 5 are <= 0; the 25th/75th percentiles of -1, 0, 1, 2, 3 are 0 and 2.
    assert summary == {"delta": 1.0, "low": 0.0, "high": 2.0, "p_le_0": 0.4, "resamples": 5}
    with_nan = bootstrap_summary(np.array([1.0, np.nan, -1.0]))
    assert with_nan["resamples"] == 2 and with_nan["p_le_0"] == 0.5


def test_paired_bootstrap_hand_worked():
    gold = {"t1": np.array([1.0, 2.0, 3.0, 4.0, 5.0]), "t2": np.array([3.0, 1.0, 2.0])}
    perfect = {t: g.copy() for t, g in gold.items()}
    reversed_ = {t: -g for t, g in gold.items()}
    # Same predictions: every resample differs by exactly 0, so P(diff <= 0) = 1.
    same = paired_bootstrap(gold, [perfect], [perfect], resamples=200)
    assert (same["delta"], same["low"], same["high"], same["p_le_0"]) == (0.0, 0.0, 0.0, 1.0)
    # Perfect against reversed: +100 - (-100) = 200 on every resample with two distinct pairs
    # (resamples drawing one pair only are undefined and left out).
    far = paired_bootstrap(gold, [perfect], [reversed_], resamples=200)
    assert far["delta"] == pytest.approx(200.0)
    assert far["low"] == pytest.approx(200.0) and far["high"] == pytest.approx(200.0)
    assert far["p_le_0"] == 0.0 and 150 < far["resamples"] <= 200
    # Two seeds, paired seed by seed: (200 + 0) / 2 = 100.
    mixed = paired_bootstrap(gold, [perfect, perfect], [reversed_, perfect], resamples=200)
    assert mixed["delta"] == pytest.approx(100.0) and mixed["low"] == pytest.approx(100.0)


def test_seed_text_shows_what_a_count_means():
    assert seed_text(parse_seeds("42")) == "seeds 42..83"  # a count, not the seed 42
    assert seed_text(parse_seeds("42,")) == "seed 42"
    assert seed_text([42, 7]) == "seeds 42,7"


@pytest.mark.parametrize(
    "config", sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "configs").glob("*.yaml"))
)
def test_shipped_benchmark_configs_plan_as_recipes(config, tmp_path):
    from hardcse.comparison.runner import plan_runs

    (spec,) = plan_runs([str(config)], [42], "cpu", tmp_path, {})
    assert spec.name == f"{config.stem}-s42"


def test_prompt_runs_do_not_share_the_untrained_scores_of_plain_runs(tmp_path):
    # A prompt run's untrained encoder is scored with the [MASK] state of its template, a plain run's
    # with its pooling: sharing one start.json gave the other's untrained row and step-0 point.
    import hashlib

    from hardcse.training.config import make_config
    from hardcse.training.start import start_key

    plain = make_config(preset="cpu", recipe="simcse", seed=42, output=str(tmp_path / "a"))
    prompt = make_config(preset="cpu", recipe="clusterns", prompt=True, seed=43, output=str(tmp_path / "b"))
    assert start_key(plain) != start_key(prompt)
    assert start_key(prompt) == start_key(make_config(preset="cpu", recipe="simcse", prompt=True, output="x"))
    old = {  # plain runs keep the key they had, so finished comparisons still find their start file
        "model": plain.model,
        "pooling": plain.pooling,
        "test_tasks": plain.test_tasks,
        "data_dir": plain.data_dir,
        "eval_batch_size": plain.eval_batch_size,
        "trust_remote_code": plain.trust_remote_code,
    }
    assert start_key(plain) == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:10]


def test_parse_seeds():
    assert parse_seeds(3) == parse_seeds("3") == [42, 43, 44]
    assert parse_seeds("42,43,44") == [42, 43, 44]
    assert parse_seeds("7,") == [7]  # a trailing comma makes a single seed, not a count
    for bad, message in (("0", "at least 1"), ("x", "count such as 3"), ("1,1", "twice")):
        with pytest.raises(ConfigError, match=message):
            parse_seeds(bad)


# ---------------------------------------------------------------------------------------------
# The comparison end to end (tiny BERT, hand-made STS data)


class StepCounter(TrainerCallback):
    """Counts optimisation steps; raises KeyboardInterrupt at ``stop_at`` (a simulated Ctrl-C)."""

    def __init__(self, stop_at: int | None = None, in_run: int = 1) -> None:
        self.steps = 0
        self.runs = 0
        self.stop_at = stop_at
        self.in_run = in_run

    def on_train_begin(self, args, state, control, **kwargs):
        self.runs += 1

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1
        if self.stop_at is not None and self.runs == self.in_run and state.global_step == self.stop_at:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("compare")
    bert = make_tiny_bert(root / "bert")
    data = write_all(root / "data", pairs=6)
    rng = torch.Generator().manual_seed(0)
    lines = []
    for _ in range(300):
        idx = torch.randint(0, 60, (int(torch.randint(4, 10, (1,), generator=rng)),), generator=rng).tolist()
        lines.append(" ".join(WORDS[i] for i in idx))
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # A recipe given as a YAML file: its label is the file's stem.
    hsim = root / "hsim.yaml"
    hsim.write_text("recipe: hsimcse\nhsimcse:\n  bank_size: 256\n", encoding="utf-8")
    overrides = {
        "model": str(bert),
        "corpus": [str(corpus)],
        "data_dir": str(data),
        "steps": 6,
        "eval_steps": 3,
        "batch_size": 32,  # ClusterNS' cpu settings use K = 32 clusters: the batch must hold 32
        "lr": 5e-4,
        "eval_batch_size": 256,
        "save_total_limit": 4,
    }
    return {"out": root / "cmp", "recipes": ["simcse", "clusterns", str(hsim)], "overrides": overrides}


def _compare(setup, **kwargs):
    lines: list[str] = []
    kwargs.setdefault("overrides", setup["overrides"])
    summary = run_comparison(
        setup["recipes"], seeds=2, output=setup["out"], show_progress=False, log=lines.append, **kwargs
    )
    return summary, lines


@pytest.mark.slow
def test_interrupted_comparison_resumes_without_redoing_runs(setup):
    out = setup["out"]
    # First call: Ctrl-C at step 4 of the 4th run (simcse, seed 43), after its step-3 checkpoint.
    stopper = StepCounter(stop_at=4, in_run=4)
    with pytest.raises(Interrupted, match="continue with: hardcse train --resume"):
        _compare(setup, callbacks=[stopper])
    for name in ("simcse-s42", "clusterns-s42", "hsim-s42"):
        assert (out / name / "results.json").is_file(), name
        assert (out / name / "test_predictions.npz").is_file(), name
    assert not (out / "simcse-s43" / "results.json").exists()
    assert (out / "simcse-s43" / "checkpoints" / "checkpoint-3").is_dir()
    assert len(list(out.glob("start-*.json"))) == 1  # the untrained evaluation, shared by all runs

    # Second call: the three finished runs are skipped, simcse-s43 continues from step 3.
    counter = StepCounter()
    summary, lines = _compare(setup, callbacks=[counter])
    assert counter.steps == 3 + 6 + 6 and counter.runs == 3
    assert sum("skipped" in line for line in lines) == 3
    assert any("simcse-s43: continuing from step 3" in line for line in lines)
    resumed = json.loads((out / "simcse-s43" / "results.json").read_text())
    assert [e["step"] for e in resumed["history"] if "loss" in e] == list(range(1, 7))
    runs = {r["name"]: r for r in summary["recipes"]["simcse"]["runs"]}
    assert runs["simcse-s43"]["resumed_from_step"] == 3
    for name in ("simcse-s42", "simcse-s43", "clusterns-s43", "hsim-s43"):
        assert json.loads((out / name / "start.json").read_text()) == json.loads(
            next(out.glob("start-*.json")).read_text()
        )


@pytest.mark.slow
def test_report_is_complete_and_consistent(setup):
    out = setup["out"]
    report = json.loads((out / "report.json").read_text())
    assert list(report["recipes"]) == ["simcse", "clusterns", "hsim"] and report["baseline"] == "simcse"
    assert report["seeds"] == [42, 43] and len(report["tasks"]) == 7
    for label, entry in report["recipes"].items():
        avgs = [json.loads((out / f"{label}-s{s}" / "results.json").read_text())["test"]["avg"] for s in (42, 43)]
        assert entry["avg"]["values"] == avgs
        assert entry["avg"]["mean"] == pytest.approx(np.mean(avgs))
        assert entry["avg"]["std"] == pytest.approx(np.std(avgs, ddof=1))
        assert [r["best_step"] in (3, 6) for r in entry["runs"]] == [True, True]
        assert all(r["train_seconds"] > 0 for r in entry["runs"])
        if label == "simcse":
            assert "vs_baseline" not in entry
            continue
        vs = entry["vs_baseline"]
        base = report["recipes"]["simcse"]["avg"]["mean"]
        assert vs["delta_avg"] == pytest.approx(entry["avg"]["mean"] - base)
        assert vs["ttest_p"] is None or 0.0 <= vs["ttest_p"] <= 1.0
        boot = vs["bootstrap"]
        # Resample 0 is the test set itself: the observed difference of the unrounded averages,
        # within rounding of the reported (two-decimal task values) averages.
        assert abs(boot["delta"] - vs["delta_avg"]) < 0.01
        assert boot["low"] <= boot["delta"] <= boot["high"] and 0.0 <= boot["p_le_0"] <= 1.0
        assert boot["resamples"] > 900
    md = (out / "report.md").read_text()
    for fragment in ("| Recipe", "STS12", "SICK-R", "± ", "Δ Avg", "t-test p", "bootstrap 95% CI", "hsim-s43"):
        assert fragment in md, fragment
    assert "![STS-B dev against step](curves.png)" in md
    import matplotlib.image

    image = matplotlib.image.imread(out / "curves.png")
    assert image.shape[0] >= 600 and image.shape[1] >= 1000  # 13 x 5.2 inches at 120 dpi


@pytest.mark.slow
def test_finished_comparison_trains_nothing_and_recomputes_missing_predictions(setup):
    out = setup["out"]
    before = json.loads((out / "report.json").read_text())
    # A run made before predictions were saved: they are computed again from its model.
    (out / "clusterns-s42" / "test_predictions.npz").unlink()
    counter = StepCounter()
    summary, lines = _compare(setup, callbacks=[counter])
    assert counter.steps == 0 and sum("skipped" in line for line in lines) == 6
    assert any("clusterns-s42: computing per-pair test predictions" in line for line in lines)
    assert (out / "clusterns-s42" / "test_predictions.npz").is_file()
    for label in ("clusterns", "hsim"):
        now, then = summary["recipes"][label]["vs_baseline"], before["recipes"][label]["vs_baseline"]
        assert now["bootstrap"]["delta"] == pytest.approx(then["bootstrap"]["delta"], abs=1e-6)


@pytest.mark.slow
def test_cli_on_a_finished_comparison_prints_the_report(setup, monkeypatch, capsys):
    sets = []
    for key, value in setup["overrides"].items():
        if key == "data_dir":
            continue
        value = f"[{value[0]}]" if isinstance(value, list) else ("0.0005" if key == "lr" else value)
        sets += ["--set", f"{key}={value}"]
    args = ["compare", "--recipes", ",".join(setup["recipes"]), "--seeds", "42,43", "--output", str(setup["out"])]
    args += ["--data-dir", setup["overrides"]["data_dir"], "--quiet", *sets]
    code, stdout, err = run_entry_point(args, monkeypatch, capsys)
    assert code == 0, err
    assert stdout.count("finished earlier, skipped") == 6
    assert "6 runs: 3 recipe(s) x 2 seed(s) (seeds 42..43)" in stdout  # the plan, before any run
    assert "## Difference from simcse" in stdout and "report.md" in stdout


@pytest.mark.parametrize(
    "edit",
    [
        # A run saved by an older hardcse lacks keys added since: the same run when the new key
        # has its default.
        lambda text: text.replace("max_grad_norm: 1.0\n", ""),
        # Speed-only settings (same embeddings and gradients; the same dropout distribution) do
        # not make it another run.
        lambda text: re.sub(r"length_chunks: \d+\n", lambda m: "length_chunks: 7\n", text),
        lambda text: text.replace("fast_dropout: true\n", "fast_dropout: false\n"),
    ],
    ids=["key-missing", "length-chunks-differ", "fast-dropout-differs"],
)
@pytest.mark.slow
def test_run_still_counts_as_finished(setup, edit):
    out = setup["out"]
    saved = out / "simcse-s42" / "config.yaml"
    text = saved.read_text(encoding="utf-8")
    edited = edit(text)
    assert edited != text
    saved.write_text(edited, encoding="utf-8")
    try:
        counter = StepCounter()
        _, lines = _compare(setup, callbacks=[counter])
        assert counter.steps == 0 and sum("skipped" in line for line in lines) == 6
    finally:
        saved.write_text(text, encoding="utf-8")


@pytest.mark.slow
def test_changed_configuration_is_refused(setup):
    out = setup["out"]
    before = (out / "simcse-s42" / "results.json").read_bytes()
    with pytest.raises(ConfigError, match=r"different configuration \(lr differ\)"):
        _compare(setup, overrides={**setup["overrides"], "lr": 1e-4})
    assert (out / "simcse-s42" / "results.json").read_bytes() == before


@pytest.mark.slow
def test_half_finished_run_without_checkpoint_restarts(setup, tmp_path, monkeypatch):
    out = tmp_path / "cmp"
    shutil.copytree(setup["out"], out)
    results = json.loads((out / "hsim-s43" / "results.json").read_text())
    shutil.rmtree(out / "hsim-s43" / "checkpoints")
    (out / "hsim-s43" / "results.json").unlink()
    calls = []

    def fake_train(config, **kwargs):  # records how the run would be trained, trains nothing
        calls.append((Path(config.output).name, kwargs))
        return results

    monkeypatch.setattr("hardcse.training.run.train", fake_train)
    _, lines = _compare({**setup, "out": out})
    assert [name for name, _ in calls] == ["hsim-s43"]
    kwargs = calls[0][1]
    assert kwargs["overwrite"] and not kwargs["resume"]  # from the start, clearing the directory
    assert kwargs["start"] == json.loads(next(out.glob("start-*.json")).read_text())  # shared start
    assert any("hsim-s43: training (restarted: no checkpoint)" in line for line in lines)


# ---------------------------------------------------------------------------------------------
# The command line: bad input gives one sentence and a non-zero exit


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--recipes", "simcse,nope"], "unknown recipe 'nope'"),
        (["--recipes", "simcse,missing.yaml"], "does not exist"),
        (["--recipes", ""], "--recipes is empty"),
        (["--seeds", "0"], "at least 1"),
        (["--seeds", "three"], "count such as 3"),
        (["--preset", "nope"], "unknown preset"),
        (["--set", "bogus=1"], "bogus"),
    ],
)
def test_cli_bad_input(args, fragment, tmp_path, monkeypatch, capsys):
    out = tmp_path / "cmp"
    code, _, err = run_entry_point(["compare", "--output", str(out), "--quiet", *args], monkeypatch, capsys)
    assert_one_sentence_error(code, err, fragment)
    assert not out.exists()  # nothing was created


def test_cli_refuses_a_directory_of_another_configuration(tmp_path, monkeypatch, capsys):
    import hardcse

    out = tmp_path / "cmp"
    earlier = hardcse.make_config(recipe="simcse", seed=42, lr=1e-3, output=str(out / "simcse-s42"))
    (out / "simcse-s42").mkdir(parents=True)
    (out / "simcse-s42" / "config.yaml").write_text(dump_yaml(earlier))
    code, _, err = run_entry_point(
        ["compare", "--recipes", "simcse", "--seeds", "42,", "--output", str(out), "--quiet"], monkeypatch, capsys
    )
    assert_one_sentence_error(code, err, "different configuration (lr differ)", "--overwrite")


def test_cli_help_lists_compare(monkeypatch, capsys):
    code, stdout, _ = run_entry_point(["compare", "--help"], monkeypatch, capsys)
    assert code == 0 and "--recipes" in stdout and "--seeds" in stdout


def test_python_api_is_exposed():
    import hardcse
    from hardcse import api

    assert hardcse.compare is api.compare and "compare" in hardcse.__all__


def test_a_run_killed_before_its_config_counts_as_new(tmp_path):
    from hardcse.comparison.runner import RunSpec, run_state
    from hardcse.rundir import LOCK, MARKER
    from hardcse.training.config import make_config

    path = tmp_path / "simcse-s42"
    path.mkdir()
    (path / MARKER).write_text('{"kind": "train"}')
    (path / LOCK).write_text("process 1\n")
    spec = RunSpec(label="simcse", seed=42, config=make_config(output=str(path)))
    assert run_state(spec) == "new"
    (path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="no config.yaml"):
        run_state(spec)
