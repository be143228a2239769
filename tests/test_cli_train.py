"""``hardcse train`` from the command line, swept over bad inputs: each gives one clear sentence
(``error: ...``, no traceback), a non-zero exit, creates no run directory, and leaves an earlier
run's files byte for byte as they were.

The table below names each case, the arguments after ``hardcse train`` and a fragment of the
expected sentence. Everything runs on the tiny BERT and a small hand-made STS directory, so no
case loads or trains the default model.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from fake_sts import write_all
from test_cli_evaluate import run_cli as run_entry_point
from test_distributed import make_bert, write_corpus


def run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    code, _, err = run_entry_point(args, monkeypatch, capsys)
    return code, err


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """Good inputs shared by every case: tiny BERT, a corpus, an STS directory."""
    root = tmp_path_factory.mktemp("cli-train")
    write_all(root / "data", pairs=6)
    write_corpus(root / "corpus.txt")
    return {"root": root, "bert": make_bert(root / "bert"), "corpus": root / "corpus.txt", "data": root / "data"}


@pytest.fixture()
def earlier_run(tmp_path) -> Path:
    """A finished run's directory (its files are compared byte for byte after each case)."""
    out = tmp_path / "earlier"
    (out / "model").mkdir(parents=True)
    (out / "model" / "model.safetensors").write_bytes(b"weights")
    (out / "results.json").write_text('{"earlier": true}')
    (out / "config.yaml").write_text("steps: 3\n")
    return out


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _data_copy(tmp: Path, inputs: dict[str, Path], edit: Callable[[Path], None]) -> Path:
    data = tmp / "data-copy"
    shutil.copytree(inputs["data"], data)
    edit(data / "senteval")
    return data


def _bad_gold(senteval: Path) -> None:
    gold = senteval / "STS" / "STS12-en-test" / "STS.gs.MSRpar.txt"
    lines = gold.read_text().splitlines()
    lines[2] = "four point five"
    gold.write_text("\n".join(lines) + "\n")


def _bad_columns(senteval: Path) -> None:
    path = senteval / "STS" / "STSBenchmark" / "sts-test.csv"
    lines = path.read_text().splitlines()
    lines[3] = "main-captions\tMSRvid\t2012test"
    path.write_text("\n".join(lines) + "\n")


def _unwritable(tmp: Path) -> str:
    """A place nobody may create a directory in: a read-only directory, or sysfs for root
    (which ignores permission bits)."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return "/sys/hardcse-test-run"
    locked = tmp / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    return str(locked / "run")


def build_case(name: str, tmp: Path, inputs: dict[str, Path], earlier: Path) -> tuple[list[str], str]:
    """(arguments after ``hardcse train``, fragment of the error sentence) for case ``name``."""
    out = str(tmp / "new")
    good = ["--model", str(inputs["bert"]), "--corpus", str(inputs["corpus"]), "--data-dir", str(inputs["data"])]
    short = ["--steps", "2", "--eval-steps", "2", "--batch-size", "8", "--set", "test_tasks=[STSBenchmark]"]

    def corpus(content: bytes) -> list[str]:
        path = tmp / "corpus.txt"
        path.write_bytes(content)
        return ["--model", str(inputs["bert"]), "--corpus", str(path), "--data-dir", str(inputs["data"])]

    def data(edit: Callable[[Path], None]) -> list[str]:
        return [*good[:4], "--data-dir", str(_data_copy(tmp, inputs, edit))]

    yaml_bad = tmp / "bad.yaml"
    yaml_bad.write_text("steps: 3\nnot_a_key: 1\n")
    yaml_remote = tmp / "remote.yaml"
    yaml_remote.write_text("trust_remote_code: true\n")
    a_file = tmp / "a-file"
    a_file.write_text("not a directory")
    # Each case is built only when it runs (some write files or lock directories).
    cases: dict[str, tuple[Callable[[], list[str]], str]] = {
        "empty corpus": (lambda: corpus(b""), "no sentences"),
        "only blank lines": (lambda: corpus(b"\n \n\t\n"), "no sentences"),
        "invalid UTF-8": (lambda: corpus("fine\ncaf\xe9 au lait\n".encode("latin-1")), "line 2"),
        "NUL byte": (lambda: corpus(b"one\ntw\x00o\n"), "NUL byte"),
        "1 MB line": (lambda: corpus(b"x" * 1_000_001 + b"\n"), "one sentence per line"),
        "missing corpus": (
            lambda: [*corpus(b"")[:2], "--corpus", str(tmp / "missing.txt"), *good[4:]],
            "does not exist",
        ),
        "missing STS file": (
            lambda: data(lambda s: (s / "STS" / "STSBenchmark" / "sts-dev.csv").unlink()),
            "sts-dev.csv",
        ),
        "malformed gold score": (lambda: data(_bad_gold), "'four point five' is not a number"),
        "wrong column count": (lambda: data(_bad_columns), "tab-separated columns"),
        "K larger than the batch": (lambda: [*good, "--recipe", "clusterns", "--set", "clusterns.k=128"], "K=128"),
        "batch size 1": (lambda: [*good, "--batch-size", "1"], "batch size 1"),
        "unknown recipe": (lambda: [*good, "--recipe", "nope"], "unknown recipe"),
        "unknown preset": (lambda: [*good, "--preset", "nope"], "unknown preset"),
        "unknown --set key": (lambda: [*good, "--set", "bogus=1"], "bogus"),
        "unwritable output": (lambda: [*good, *short, "--output", _unwritable(tmp)], "not writable"),
        "output is a file": (lambda: [*good, "--output", str(a_file)], "not a directory"),
        "existing output": (lambda: [*good, "--output", str(earlier)], "already holds a run"),
        "resume a finished run": (lambda: ["--resume", "--output", str(earlier)], "already complete"),
        "resume nothing": (lambda: ["--resume", "--output", str(tmp / "nothing")], "nothing to resume"),
        "NaN loss": (lambda: [*good, "--lr", "1e9", "--steps", "30", "--eval-steps", "2", "--batch-size", "8"], "NaN"),
        "missing model": (lambda: ["--model", str(tmp / "no-such-model"), *good[2:]], "no-such-model"),
        "YAML with an unknown key": (lambda: [*good, "--config", str(yaml_bad)], "not_a_key"),
        "missing YAML": (lambda: [*good, "--config", str(tmp / "none.yaml")], "does not exist"),
        "remote code from a YAML": (lambda: [*good, "--config", str(yaml_remote)], "--trust-remote-code"),
    }
    build, fragment = cases[name]
    args = build()
    if "--output" not in args:
        args = [*args, "--output", out]
    return args, fragment


CASES = [
    "empty corpus",
    "only blank lines",
    "invalid UTF-8",
    "NUL byte",
    "1 MB line",
    "missing corpus",
    "missing STS file",
    "malformed gold score",
    "wrong column count",
    "K larger than the batch",
    "batch size 1",
    "unknown recipe",
    "unknown preset",
    "unknown --set key",
    "unwritable output",
    "output is a file",
    "existing output",
    "resume a finished run",
    "resume nothing",
    "NaN loss",
    "missing model",
    "YAML with an unknown key",
    "missing YAML",
    "remote code from a YAML",
]


@pytest.mark.parametrize("name", CASES)
def test_bad_input_gives_one_sentence(name, inputs, earlier_run, tmp_path, monkeypatch, capsys):
    before = snapshot(earlier_run)
    args, fragment = build_case(name, tmp_path, inputs, earlier_run)
    code, err = run_cli(["train", "--quiet", *args], monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code != 0, (name, err)
    assert "Traceback" not in err, (name, err)
    assert len(lines) == 1, (name, err)
    assert fragment in lines[0], (name, lines[0])
    assert snapshot(earlier_run) == before, name
    new = tmp_path / "new"
    if name == "NaN loss":
        # Training ran and stopped at the NaN: the good checkpoints stay, no results pretend otherwise.
        assert not (new / "results.json").exists() and not (new / "model").exists()
    else:
        assert not new.exists(), name


def test_sweep_covers_the_issue_list():
    """At least the fifteen kinds of bad input the issue names are in the table."""
    required = {
        "empty corpus",
        "only blank lines",
        "invalid UTF-8",
        "NUL byte",
        "1 MB line",
        "missing STS file",
        "malformed gold score",
        "wrong column count",
        "K larger than the batch",
        "batch size 1",
        "unknown recipe",
        "unknown preset",
        "unwritable output",
        "existing output",
        "NaN loss",
        "missing model",
        "YAML with an unknown key",
    }
    assert required <= set(CASES) and len(CASES) >= 15
