"""The GPU check (``benchmarks/gpu_check.sh``) in its CPU dry run, and the pieces it is built from.

The dry run is the same code as the CUDA run at a test's size, so a change that breaks the GPU
check fails here, on any machine, not only when someone runs it on a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check  # noqa: E402
import gpu_fixtures  # noqa: E402


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[int, dict, Path]:
    out = tmp_path_factory.mktemp("gpu-check")
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "HARDCSE_DATA")}
    env.update(PYTHON=sys.executable, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--cpu", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = json.loads((out / "gpu_check.json").read_text(encoding="utf-8"))
    return proc.returncode, report, out


@pytest.mark.slow
def test_dry_run_passes_every_check(dry_run):
    code, report, out = dry_run
    failed = {c["name"]: c["detail"] for c in report["checks"] if c["status"] == "FAIL"}
    assert not failed
    assert code == 0
    assert report["mode"] == "cpu dry run" and report["summary"]["FAIL"] == 0
    assert (out / "gpu_check.md").is_file() and (out / "gpu_check.log").is_file()


@pytest.mark.slow
def test_dry_run_covers_every_recipe_and_stage(dry_run):
    _, report, _ = dry_run
    status = {c["name"]: c["status"] for c in report["checks"]}
    for recipe in ("simcse", "clusterns", "hsimcse"):
        for stage in (f"same-loss/{recipe}", f"train/{recipe}/fp32", f"resume/{recipe}/fp32", f"export/{recipe}/fp32"):
            assert status.get(stage) == "PASS", stage
    assert status["eval/stsb"] == "PASS"
    assert all(status[name] == "PASS" for name in status if name.startswith("options/") and "mini-batch" not in name)
    # fp16 cannot run on a CPU: it is a SKIP that says why, not a silent omission.
    fp16 = next(c for c in report["checks"] if c["name"] == "train/*/fp16")
    assert fp16["status"] == "SKIP" and "GPU" in fp16["detail"]
    batches = [row["batch"] for row in report["timing"]]
    assert batches[:2] == [8, 16]
    assert all(row["sentences_per_s"] > 0 and row["peak_gib"] is None for row in report["timing"])


def test_failures_and_budget_are_reported(tmp_path):
    plan = gpu_check.make_plan(cpu=True, budget=1000.0)
    report = gpu_check.Report(tmp_path, plan)

    def broken():
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore")

    assert report.run("ok", lambda: "fine") is True
    assert report.run("crash", broken) is False
    assert report.run("expectation", lambda: gpu_check.expect(False, "loss 3.1 vs 2.9")) is False
    report.plan.budget_s = -1.0
    assert report.run("late", lambda: "never runs") is False
    checks = {c["name"]: c for c in json.loads((tmp_path / "gpu_check.json").read_text())["checks"]}
    assert checks["crash"]["status"] == "FAIL"
    assert checks["crash"]["detail"] == "RuntimeError: CUDA error: an illegal memory access was encountered"
    assert checks["crash"]["data"]["traceback"]
    assert checks["expectation"]["detail"] == "loss 3.1 vs 2.9"
    assert checks["late"]["status"] == "SKIP" and "budget" in checks["late"]["detail"]
    assert report.counts() == {"PASS": 1, "FAIL": 2, "SKIP": 1}
    assert "| FAIL | crash |" in (tmp_path / "gpu_check.md").read_text()


def test_generated_vocabulary_and_sts_data(tmp_path):
    from hardcse.data.sts import load_task

    vocab = gpu_fixtures.vocabulary(gpu_fixtures.BERT_BASE.vocab)
    assert len(vocab) == len(set(vocab)) == 30522
    assert vocab[:5] == gpu_fixtures.SPECIALS
    gpu_fixtures.write_stsb(tmp_path, gpu_fixtures.vocabulary(600), pairs=12)
    pairs = load_task("STSBenchmark", tmp_path, "test")
    (subset,) = pairs.values()
    assert len(subset.scores) == 12 and min(subset.scores) >= 0.0 and max(subset.scores) <= 5.0


def test_non_embedding_parameters_counts_the_encoder(tmp_path):
    from transformers import BertModel

    path = gpu_fixtures.make_bert(tmp_path / "bert", gpu_fixtures.TINY)
    model = BertModel.from_pretrained(str(path))
    encoder = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("embeddings."))
    hidden = gpu_fixtures.TINY.hidden
    assert gpu_check.non_embedding_parameters(path) == encoder + hidden * hidden + hidden  # + the train-only head
