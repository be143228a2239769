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
from helpers import make_tiny_bert as make_bert
from helpers import run_cli as run_entry_point
from helpers import snapshot, write_all, write_corpus


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


def _truncate(model_dir: Path, size: int) -> None:
    with open(model_dir / "model.safetensors", "r+b") as handle:
        handle.truncate(size)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _header_only(path: Path) -> None:
    path.write_text(path.read_text().splitlines()[0] + "\n")


def _user_dir(tmp: Path) -> Path:
    """A folder of the user's own files (not a run): --overwrite must leave it alone."""
    folder = _mkdir(tmp / "my-files")
    (folder / "thesis.tex").write_text("years of work")
    (folder / "config.yaml").write_text("not: a hardcse run\n")
    return folder


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

    def model(edit: Callable[[Path], None]) -> list[str]:
        copy = tmp / "model-copy"
        shutil.copytree(inputs["bert"], copy)
        edit(copy)
        return ["--model", str(copy)]

    yaml_broken = tmp / "broken.yaml"
    yaml_broken.write_text("steps: 3\nlr: 1e-4: x\nseed: 1\n")
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
        # damaged or unusual model directories
        "truncated weights": (lambda: [*model(lambda d: _truncate(d, 100)), *good[2:]], "truncated"),
        "zero-byte weights": (lambda: [*model(lambda d: _truncate(d, 0)), *good[2:]], "truncated"),
        "empty model directory": (lambda: ["--model", str(_mkdir(tmp / "empty-model")), *good[2:]], "config.json"),
        "method settings not a mapping": (lambda: [*good, "--set", "clusterns=5"], "must be a mapping"),
        "method value not a number": (
            lambda: [*good, "--recipe", "clusterns", "--set", "clusterns.k=abc"],
            "'clusterns.k' in the options must be a number",
        ),
        "unknown method key": (lambda: [*good, "--set", "clusterns.kk=3"], "valid keys are clusterns.bml_alpha"),
        "dropout 2": (lambda: [*good, "--set", "dropout=2"], "dropout is a probability"),
        "corpus is a device": (
            lambda: [*corpus(b"")[:2], "--corpus", "/dev/zero", *good[4:]],
            "not a regular file",
        ),
        "negative seed": (lambda: [*good, "--seed", "-1"], "--seed must be between 0"),
        "NaN epochs": (lambda: [*good, "--epochs", "nan"], "finite number"),
        "zero sentences": (lambda: [*good, "--max-sentences", "0"], "--max-sentences must be at least 1"),
        "negative sentences": (lambda: [*good, "--max-sentences", "-1"], "--max-sentences must be at least 1"),
        "zero evaluation batch": (lambda: [*good, "--set", "eval_batch_size=0"], "eval_batch_size must be at least 1"),
        "zero sequence length": (lambda: [*good, "--set", "max_seq_length=0"], "max_seq_length must be at least 1"),
        "infinite learning rate": (lambda: [*good, "--lr", "inf"], "'lr' in the options must be a finite number"),
        "NaN temperature": (lambda: [*good, "--set", "temperature=nan"], "must be a finite number"),
        "one-sentence corpus": (lambda: corpus(b"just one sentence\n"), "at least 2"),
        "same sentence twice": (lambda: corpus(b"again\nagain\n"), "at least 2"),
        "empty STS-B test file": (
            lambda: data(lambda s: (s / "STS" / "STSBenchmark" / "sts-test.csv").write_text("")),
            "0 scored pair(s)",
        ),
        "empty SICK test file": (
            lambda: data(lambda s: _header_only(s / "SICK" / "SICK_test_annotated.txt")),
            "0 scored pair(s)",
        ),
        "unknown task": (lambda: [*good, "--tasks", "STS99"], "STS99"),
        "malformed --set value": (lambda: [*good, "--set", "x=[1"], "is not a valid value"),
        "two unknown keys": (lambda: [*good, "--set", "foo=1", "--set", "bar=2"], "unknown keys 'foo', 'bar'"),
        "malformed YAML": (lambda: [*good, "--config", str(yaml_broken)], "line 2"),
        "overwrite a user's directory": (
            lambda: [*good, "--output", str(_user_dir(tmp)), "--overwrite"],
            "not a hardcse",
        ),
        "overwrite and resume": (
            lambda: ["--resume", "--overwrite", "--output", str(earlier)],
            "--overwrite cannot be used",
        ),
        "resume with other options": (lambda: ["--resume", "--output", str(earlier), "--steps", "9"], "--steps"),
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
    "truncated weights",
    "zero-byte weights",
    "empty model directory",
    "method settings not a mapping",
    "method value not a number",
    "unknown method key",
    "dropout 2",
    "corpus is a device",
    "negative seed",
    "NaN epochs",
    "zero sentences",
    "negative sentences",
    "zero evaluation batch",
    "zero sequence length",
    "infinite learning rate",
    "NaN temperature",
    "one-sentence corpus",
    "same sentence twice",
    "empty STS-B test file",
    "empty SICK test file",
    "unknown task",
    "malformed --set value",
    "two unknown keys",
    "malformed YAML",
    "overwrite a user's directory",
    "overwrite and resume",
    "resume with other options",
]


@pytest.mark.parametrize("name", CASES)
def test_bad_input_gives_one_sentence(name, inputs, earlier_run, tmp_path, monkeypatch, capsys):
    before = snapshot(earlier_run)
    args, fragment = build_case(name, tmp_path, inputs, earlier_run)
    user = tmp_path / "my-files"
    user_before = snapshot(user) if user.is_dir() else None
    code, err = run_cli(["train", "--quiet", *args], monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code != 0, (name, err)
    assert "Traceback" not in err, (name, err)
    assert len(lines) == 1, (name, err)
    assert fragment in lines[0], (name, lines[0])
    assert snapshot(earlier_run) == before, name
    if user_before is not None:
        assert snapshot(user) == user_before, name
    new = tmp_path / "new"
    if name == "NaN loss":
        # Training ran and stopped at the NaN: the good checkpoints stay, no results pretend otherwise.
        assert not (new / "results.json").exists() and not (new / "model").exists()
    else:
        assert not new.exists(), name
