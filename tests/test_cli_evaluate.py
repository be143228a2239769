"""``hardcse evaluate``: end to end on the bundled model, and one clear sentence for each user error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import assert_one_sentence_error, run_cli, write_all, write_sts_year

HARDCSE = Path(sys.executable).with_name("hardcse")


@pytest.mark.skipif(not HARDCSE.exists(), reason="the hardcse script is not installed next to python")
@pytest.mark.slow
def test_evaluate_end_to_end_on_the_default_model(data_dir, tmp_path):
    out = tmp_path / "res" / "stsb.json"
    env = {**os.environ, "HARDCSE_DATA": str(data_dir), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [str(HARDCSE), "evaluate", "default", "--tasks", "STS-B", "--output", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("sentence-transformers/all-MiniLM-L6-v2  pooling=mean  aggregation=all")
    assert [c.strip() for c in lines[1].strip("|").split("|")] == ["STS-B", "Avg"]
    # Regression anchor measured here: all-MiniLM-L6-v2 (mean pooling) scores 82.03 on STS-B test.
    assert [c.strip() for c in lines[3].strip("|").split("|")] == ["82.03", "82.03"]
    result = json.loads(out.read_text())
    assert result["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert result["tasks"]["STSBenchmark"]["pairs"] == 1379
    assert round(result["tasks"]["STSBenchmark"]["spearman"], 2) == 82.03
    assert result["avg"] == 82.03
    assert not list(out.parent.glob(".*.tmp"))  # the temporary file was renamed


@pytest.mark.slow
def test_evaluate_in_process_on_hand_made_data(tmp_path, monkeypatch, capsys):
    write_all(tmp_path)
    out = tmp_path / "r.json"
    code, stdout, err = run_cli(
        ["evaluate", "default", "--data-dir", str(tmp_path), "--tasks", "sts13,sickr", "--pooling", "cls"]
        + ["--aggregation", "wmean", "--output", str(out)],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    assert "| STS13 | SICK-R |" in stdout.replace("  ", " ")
    result = json.loads(out.read_text())
    assert (result["pooling"], result["aggregation"]) == ("cls", "wmean")
    assert list(result["tasks"]) == ["STS13", "SICKRelatedness"]


@pytest.mark.slow
def test_no_fused_kernels_reaches_the_encoder_and_scores_the_same(tmp_path, monkeypatch, capsys):
    import hardcse.models.fused_linear as fused_linear

    write_all(tmp_path)
    seen = []
    original = fused_linear.fused_cpu_inference

    def spy(model, enabled=True):
        seen.append(enabled)
        return original(model, enabled)

    monkeypatch.setattr(fused_linear, "fused_cpu_inference", spy)
    tables = {}
    for flag in ([], ["--no-fused-kernels"]):
        code, stdout, err = run_cli(
            ["evaluate", "default", "--data-dir", str(tmp_path), "--tasks", "sts12,stsb", *flag], monkeypatch, capsys
        )
        assert code == 0, err
        tables[bool(flag)] = stdout.splitlines()[1:]
    assert seen == [True, False]
    assert tables[True] == tables[False]  # the same scores to two decimals


@pytest.fixture
def fake_dir(tmp_path):
    return write_all(tmp_path / "data")


def test_malformed_line_names_file_and_line(fake_dir, monkeypatch, capsys):
    gold = fake_dir / "senteval" / "STS" / "STS13-en-test" / "STS.gs.headlines.txt"
    gold.write_text("1\n2\nfour\n3\n")
    code, _, err = run_cli(["evaluate", "default", "--data-dir", str(fake_dir)], monkeypatch, capsys)
    assert_one_sentence_error(code, err, f"{gold}, line 3: gold score 'four' is not a number")


def test_missing_files_are_listed(tmp_path, monkeypatch, capsys):
    write_sts_year(tmp_path, "STS12")
    code, _, err = run_cli(
        ["evaluate", "default", "--data-dir", str(tmp_path), "--tasks", "STS12,STS13"], monkeypatch, capsys
    )
    assert_one_sentence_error(
        code, err, "6 STS data file(s) missing", "STS13-en-test/STS.input.FNWN.txt", "run `hardcse download`"
    )


def test_missing_data_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HARDCSE_DATA", str(tmp_path / "none"))
    code, _, err = run_cli(["evaluate", "default"], monkeypatch, capsys)
    assert_one_sentence_error(code, err, f"data directory {tmp_path / 'none'} does not exist", "--data-dir")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--tasks", "STS12,STS17"], "unknown STS task 'STS17'; valid tasks are STS12"),
        (["--pooling", "first"], "unknown pooling 'first'"),
        (["--aggregation", "median"], "unknown aggregation 'median'"),
        (["--split", "dev", "--tasks", "STS12"], "STS12 only has a test set"),
        (["--split", "val"], "unknown split 'val'"),
    ],
)
def test_bad_options(fake_dir, monkeypatch, capsys, args, fragment):
    code, _, err = run_cli(["evaluate", "default", "--data-dir", str(fake_dir), *args], monkeypatch, capsys)
    assert_one_sentence_error(code, err, fragment)


def test_missing_model_path(fake_dir, tmp_path, monkeypatch, capsys):
    missing = tmp_path / "runs" / "nothing-here"
    code, _, err = run_cli(["evaluate", str(missing), "--data-dir", str(fake_dir)], monkeypatch, capsys)
    assert_one_sentence_error(code, err, f"model '{missing}' not found: not a local directory")


def test_output_that_is_a_directory(fake_dir, tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(
        ["evaluate", "default", "--data-dir", str(fake_dir), "--output", str(tmp_path)], monkeypatch, capsys
    )
    assert_one_sentence_error(code, err, f"--output {tmp_path} is a directory")
