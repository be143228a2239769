"""``--help`` reads well in an 80-column terminal: each option's text starts beside it and wraps
across the line (not into a column two or three words wide), nothing runs past column 80, the
common commands end with examples, and ``hardcse --help`` gives each command a whole sentence."""

from __future__ import annotations

import re

import pytest
from helpers import run_cli

from hardcse.cli.examples import EXAMPLES, SUMMARIES

COMMANDS = ["train", "evaluate", "compare", "convert", "mlm", "download"]


def _help(args: list[str], monkeypatch, capsys) -> str:
    monkeypatch.setenv("COLUMNS", "80")
    code, stdout, stderr = run_cli([*args, "--help"], monkeypatch, capsys)
    assert code == 0, stderr
    return stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_help_fits_80_columns_and_ends_with_examples(command, monkeypatch, capsys):
    text = _help([command], monkeypatch, capsys)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, [line for line in lines if len(line) > 80]
    assert "Examples:" in text and f"hardcse {command}" in text.split("Examples:", 1)[1]
    # Examples keep their lines (click's \b marker), each on its own line.
    examples = [line.strip() for line in EXAMPLES[command].splitlines()[2:]]
    for example in examples:
        assert example in [line.strip() for line in lines], example


def test_train_option_help_wraps_across_the_line(monkeypatch, capsys):
    text = _help(["train"], monkeypatch, capsys)
    rows = [line for line in text.splitlines() if re.match(r"^  --[a-z]", line)]
    assert len(rows) > 20
    # The help text of an option starts on its own line, at most 34 columns in: at least 44
    # columns of text per line (rich's table left 22 at 80 columns).
    starts = [m.start(1) for line in rows if (m := re.match(r"^  --\S+(?: / --\S+)?(?: <[^>]+>)?\s{2,}(\S)", line))]
    assert len(starts) > 20 and max(starts) <= 34, starts
    report = text.split("--report-to", 1)[1].split("\n  -")[0]
    assert "tensorboard" in report and "wandb, mlflow, trackio" in " ".join(report.split())
    assert len(report.splitlines()[0]) > 60  # the first line of its help is long, not 2-3 words


def test_command_list_has_whole_sentences(monkeypatch, capsys):
    text = _help([], monkeypatch, capsys)
    assert "..." not in text.split("Commands:", 1)[1]
    for command, summary in SUMMARIES.items():
        assert f"  {command}" in text and summary in text, command
    assert "raw-encoder" not in text
