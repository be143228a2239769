"""Atomic outputs: an interrupted write leaves the previous file (or nothing), never a truncated one."""

from __future__ import annotations

from pathlib import Path

import pytest

from hardcse.io import atomic_directory, atomic_write_json, atomic_write_text, atomic_write_with


class Interrupted(Exception):
    pass


def _no_temporaries(folder: Path) -> bool:
    return not [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_text_and_json_replace_in_one_step(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "old")
    atomic_write_text(tmp_path / "a.txt", "new")
    atomic_write_json(tmp_path / "r.json", {"x": 1})
    assert (tmp_path / "a.txt").read_text() == "new"
    assert (tmp_path / "r.json").read_text() == '{\n  "x": 1\n}\n'
    assert _no_temporaries(tmp_path)


def test_interrupted_file_writer_keeps_the_old_file(tmp_path):
    target = tmp_path / "curves.png"
    target.write_bytes(b"old plot")

    def half_then_fail(tmp: Path) -> None:
        assert tmp.suffix == ".png" and tmp != target  # the format is kept, the name is not the target
        tmp.write_bytes(b"half")
        raise Interrupted

    with pytest.raises(Interrupted):
        atomic_write_with(target, half_then_fail)
    assert target.read_bytes() == b"old plot"
    assert _no_temporaries(tmp_path)


def test_interrupted_directory_writer_keeps_the_old_directory(tmp_path):
    model = tmp_path / "model"
    atomic_directory(model, lambda tmp: (tmp / "weights").write_bytes(b"v1"))

    def half_then_fail(tmp: Path) -> None:
        (tmp / "weights").write_bytes(b"v2-partial")
        raise Interrupted

    with pytest.raises(Interrupted):
        atomic_directory(model, half_then_fail)
    assert (model / "weights").read_bytes() == b"v1"
    atomic_directory(model, lambda tmp: (tmp / "weights").write_bytes(b"v2"))
    assert (model / "weights").read_bytes() == b"v2"
    assert _no_temporaries(tmp_path)


def test_strict_json_writes_non_finite_numbers_as_null(tmp_path):
    import json
    import math

    value = {"a": math.nan, "b": [1.5, math.inf, -math.inf], "c": {"d": math.nan, "e": "nan"}}
    atomic_write_json(tmp_path / "strict.json", value, strict=True)
    text = (tmp_path / "strict.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.5, None, None], "c": {"d": None, "e": "nan"}}
    assert math.isnan(value["a"])  # the caller's value is not changed
    # Without strict, NaN survives a round trip through json.loads (resume reads it back).
    atomic_write_json(tmp_path / "loose.json", value)
    assert math.isnan(json.loads((tmp_path / "loose.json").read_text())["a"])
