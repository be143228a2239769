"""``hardcse train`` from the command line: one clear sentence and a non-zero exit for bad input,
and nothing an earlier run wrote is lost."""

from __future__ import annotations

import pytest
from test_cli_evaluate import run_cli as run_entry_point


def run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    code, _, err = run_entry_point(args, monkeypatch, capsys)
    return code, err


@pytest.fixture()
def earlier_run(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text('{"earlier": true}')
    return out


def _cases(tmp_path, earlier_run):
    good = tmp_path / "good.txt"
    good.write_text("a sentence\nanother sentence\n")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n \n\t\n")
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("fine\ncaf\xe9 au lait\n".encode("latin-1"))
    nul = tmp_path / "nul.txt"
    nul.write_bytes(b"one\ntw\x00o\n")
    huge = tmp_path / "huge.txt"
    huge.write_text("x" * 1_000_001 + "\n")
    yaml_bad = tmp_path / "bad.yaml"
    yaml_bad.write_text("steps: 3\nnot_a_key: 1\n")
    out = str(tmp_path / "new")
    return [
        (["--corpus", str(empty), "--output", out], "no sentences"),
        (["--corpus", str(blank), "--output", out], "no sentences"),
        (["--corpus", str(latin), "--output", out], "line 2"),
        (["--corpus", str(nul), "--output", out], "NUL byte"),
        (["--corpus", str(huge), "--output", out], "one sentence per line"),
        (["--corpus", str(tmp_path / "missing.txt"), "--output", out], "does not exist"),
        (["--recipe", "nope", "--output", out], "unknown recipe"),
        (["--preset", "nope", "--output", out], "unknown preset"),
        (["--batch-size", "1", "--output", out], "batch size 1"),
        (["--config", str(yaml_bad), "--output", out], "not_a_key"),
        (["--config", str(tmp_path / "none.yaml"), "--output", out], "does not exist"),
        (["--set", "bogus=1", "--output", out], "bogus"),
        (["--recipe", "clusterns", "--set", "clusterns.k=128", "--corpus", str(good), "--output", out], "K=128"),
        (["--corpus", str(good), "--output", str(earlier_run)], "already holds a run"),
        (["--resume", "--output", str(tmp_path / "nothing")], "nothing to resume"),
        (["--model", str(tmp_path / "no-such-model"), "--corpus", str(good), "--output", out], "no-such-model"),
    ]


def test_bad_inputs_give_one_sentence(tmp_path, earlier_run, monkeypatch, capsys, data_dir):
    for args, fragment in _cases(tmp_path, earlier_run):
        code, err = run_cli(["train", "--data-dir", str(data_dir), "--quiet", *args], monkeypatch, capsys)
        lines = [line for line in err.splitlines() if line.startswith("error: ")]
        assert code != 0, args
        assert "Traceback" not in err, (args, err)
        assert len(lines) == 1, (args, err)
        assert fragment in lines[0], (args, lines[0])
    assert (earlier_run / "results.json").read_text() == '{"earlier": true}'
