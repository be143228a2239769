"""Pair sets: a user's own pair files (TSV, CSV, JSONL, `datasets`), the built-in domains (no dev or
test sentence in a domain corpus), bad input as one sentence, and `evaluate --pairs`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_sentence_error, make_tiny_bert, run_cli, snapshot

from hardcse.data.corpus import read_corpus
from hardcse.data.domains import DOMAINS, canonical_domain, domain_corpus, domain_pairs, held_out_sentences
from hardcse.data.pairs import load_pair_set, overlap_warning, read_pair_file, unique_names
from hardcse.data.sts import load_task
from hardcse.errors import ConfigError, DataError
from hardcse.evaluation.pairs import spearman_interval


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert", dropout=0.0)


ROWS = [
    ("A man plays a guitar.", "A man is playing a guitar.", 4.8),
    ("A dog runs in a field.", "A cat sleeps on a sofa.", 0.4),
    ('She said "hello, there".', "She greeted them.", 3.1),
    ("Kids play soccer.", "Children are playing football.", 4.1),
]


def _write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _tsv(path: Path, header: bool = True) -> Path:
    lines = ["sentence1\tsentence2\tscore"] if header else []
    lines += [f"{a}\t{b}\t{s}" for a, b, s in ROWS]
    return _write(path, "\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------
# Parsing


def test_tsv_with_and_without_header(tmp_path):
    for header in (True, False):
        pairs = read_pair_file(_tsv(tmp_path / f"p{header}.tsv", header))
        assert pairs.sentences1 == [r[0] for r in ROWS]
        assert pairs.sentences2 == [r[1] for r in ROWS]
        assert pairs.scores.tolist() == [r[2] for r in ROWS]


def test_csv_with_quoting_and_other_column_names(tmp_path):
    lines = ["id,first,second,label"]
    for i, (a, b, s) in enumerate(ROWS):
        quoted = '"' + a.replace('"', '""') + '"'
        lines.append(f"{i},{quoted},{b},{s}")
    path = _write(tmp_path / "pairs.csv", "\n".join(lines) + "\n")
    pairs = read_pair_file(path, ["first", "second", "label"])
    assert pairs.sentences1[2] == 'She said "hello, there".'
    assert pairs.scores.tolist() == [r[2] for r in ROWS]
    with pytest.raises(DataError, match="no column 'nope'"):
        read_pair_file(path, ["first", "nope", "label"])


def test_positional_columns_without_header(tmp_path):
    lines = [f"x{i}\t{s}\t{a}\t{b}" for i, (a, b, s) in enumerate(ROWS)]
    path = _write(tmp_path / "pairs.tsv", "\n".join(lines) + "\n")
    pairs = read_pair_file(path, ["2", "3", "1"])
    assert pairs.sentences2 == [r[1] for r in ROWS] and pairs.scores.tolist() == [r[2] for r in ROWS]


def test_jsonl_objects_and_lists(tmp_path):
    objects = "\n".join(json.dumps({"sentence1": a, "sentence2": b, "score": s}) for a, b, s in ROWS)
    lists = "\n".join(json.dumps([a, b, s]) for a, b, s in ROWS)
    for name, text in (("o.jsonl", objects), ("l.jsonl", lists)):
        pairs = read_pair_file(_write(tmp_path / name, text + "\n"))
        assert pairs.sentences1 == [r[0] for r in ROWS] and pairs.scores.tolist() == [r[2] for r in ROWS]


def test_saved_datasets_directory(tmp_path):
    from datasets import Dataset

    table = Dataset.from_dict({"s1": [r[0] for r in ROWS], "s2": [r[1] for r in ROWS], "y": [r[2] for r in ROWS]})
    table.save_to_disk(str(tmp_path / "ds"))
    pair_set = load_pair_set(str(tmp_path / "ds"), "test", columns="s1,s2,y")
    assert pair_set.pairs.sentences2 == [r[1] for r in ROWS]
    with pytest.raises(DataError, match="no column 'sentence1'"):
        load_pair_set(str(tmp_path / "ds"), "test")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.tsv", "", "is empty"),
        ("blank.tsv", "\n\n  \n", "is empty"),
        ("latin1.tsv", b"a\tb\t1\n\xe9t\xe9\tc\t2\nx\ty\t3\n", "not valid UTF-8"),
        ("word.tsv", "a\tb\t1\nc\td\thigh\ne\tf\t3\n", "score 'high' is not a finite number"),
        ("nan.tsv", "a\tb\t1\nc\td\tnan\ne\tf\t3\n", "score 'nan' is not a finite number"),
        ("two.tsv", "a\tb\t1\nc\td\t2\n", "has 2 pair(s)"),
        ("same.tsv", "a\tb\t3\nc\td\t3\ne\tf\t3\n", "the same score"),
        ("short.tsv", "a\tb\t1\nc\td\ne\tf\t3\n", "line 2: expected at least 3 columns"),
        ("header.tsv", "sentence1\ttext\tscore\na\tb\t1\n", "without column 'sentence2'"),
        ("bad.jsonl", '{"sentence1": "a", "sentence2": "b", "score": 1}\n{oops\n', "line 2: not valid JSON"),
        ("keys.jsonl", '{"a": "x", "b": "y", "score": 1}\n', "no key 'sentence1', 'sentence2'"),
        ("pairs.xlsx", "a", "unknown format '.xlsx'"),
    ],
)
def test_bad_pair_files_are_one_sentence(tmp_path, name, content, message):
    path = _write(tmp_path / name, content)
    with pytest.raises(DataError) as err:
        read_pair_file(path)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file_and_bad_columns(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_pair_set(str(tmp_path / "nope.tsv"), "test")
    with pytest.raises(ConfigError, match="three names"):
        load_pair_set(str(_tsv(tmp_path / "p.tsv")), "test", columns="a,b")


def test_names_are_made_unique_and_repeats_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    sets = [load_pair_set(str(_tsv(tmp_path / d / "pairs.tsv")), "test") for d in ("a", "b")]
    assert [s.name for s in unique_names(sets)] == ["pairs.tsv", "pairs.tsv (2)"]
    again = [load_pair_set(str(tmp_path / "a" / "pairs.tsv"), "test") for _ in range(2)]
    with pytest.raises(ConfigError, match="given twice"):
        unique_names(again)


def test_overlap_warning_counts_shared_sentences(tmp_path):
    pair_set = load_pair_set(str(_tsv(tmp_path / "p.tsv")), "dev")
    assert overlap_warning(pair_set, {"unrelated"}, "dev") is None
    warning = overlap_warning(pair_set, {ROWS[0][0], ROWS[1][1]}, "dev")
    assert warning is not None and "share 2 of their 8 distinct sentences" in warning


def test_interval_brackets_the_score():
    rng = np.random.default_rng(0)
    gold = rng.uniform(0, 5, 300)
    system = gold + rng.normal(0, 1.5, 300)
    low, high = spearman_interval(gold, system)
    from hardcse.evaluation.scoring import spearman100

    assert low < spearman100(gold, system) < high and high - low < 20


# --------------------------------------------------------------------------------------------
# Built-in domains


def test_domain_names():
    assert canonical_domain("sts-b:captions") == "STS-B:captions"
    assert canonical_domain("STSB:News") == "STS-B:news"
    assert canonical_domain("sick-r") == "SICK"
    assert canonical_domain("pairs.tsv") is None
    with pytest.raises(ConfigError, match="unknown STS-B genre 'movies'"):
        canonical_domain("STS-B:movies")


def test_genres_partition_stsb(data_dir):
    """The genres' pairs add up to each split, and the forum genre's two spellings are both found."""
    for split, total in (("dev", 1500), ("test", 1379)):
        sizes = [len(domain_pairs(f"STS-B:{g}", split, data_dir)) for g in ("captions", "news", "forums")]
        assert sum(sizes) == total and min(sizes) > 0
    assert len(domain_pairs("STS-B:forums", "train", data_dir)) == 450  # "main-forum" in train
    assert len(domain_pairs("STS-B:forums", "test", data_dir)) == 254  # "main-forums" in test


@pytest.mark.parametrize("domain", DOMAINS)
def test_no_dev_or_test_sentence_reaches_a_domain_corpus(data_dir, domain):
    corpus = domain_corpus(domain, data_dir)
    assert len(corpus) == len(set(corpus)) > 100
    held = held_out_sentences(data_dir)
    assert not set(corpus) & held
    for other in DOMAINS:  # in particular the domain's own dev and test pairs
        for split in ("dev", "test"):
            pairs = domain_pairs(other, split, data_dir)
            assert not set(corpus) & (set(pairs.sentences1) | set(pairs.sentences2))
    for split in ("dev", "test"):  # the official files themselves, read by the task loader
        for pairs in load_task("STSBenchmark", data_dir, split).values():
            assert not set(corpus) & (set(pairs.sentences1) | set(pairs.sentences2))


def test_captions_corpus_removes_the_reused_sentences(data_dir):
    train = domain_pairs("STS-B:captions", "train", data_dir)
    distinct = set(train.sentences1) | set(train.sentences2)
    corpus = read_corpus(["STS-B:captions"], data_dir)  # the corpus reader knows the domain names
    assert len(distinct) - len(corpus) > 300  # STS-B train reuses dev/test sentences
    assert set(corpus) <= distinct


def test_domain_pair_sets_use_the_role_split(data_dir):
    dev = load_pair_set("STS-B:captions", "dev", data_dir)
    test = load_pair_set("STS-B:captions", "test", data_dir)
    assert dev.name == test.name == "STS-B:captions"
    assert len(dev.pairs) == len(test.pairs) == 625
    assert dev.pairs.sentences1 != test.pairs.sentences1


# --------------------------------------------------------------------------------------------
# The command line


def test_evaluate_pairs_cli(tmp_path, monkeypatch, capsys, tiny_model_dir):
    path = _tsv(tmp_path / "mine.tsv")
    out = tmp_path / "result.json"
    code, stdout, err = run_cli(
        ["evaluate", str(tiny_model_dir), "--pairs", str(path), "--output", str(out)], monkeypatch, capsys
    )
    assert code == 0, err
    assert "mine.tsv" in stdout and "95% interval" in stdout
    result = json.loads(out.read_text())
    entry = result["pairs"]["mine.tsv"]
    assert entry["pairs"] == 4 and math.isfinite(entry["spearman"]) and entry["low"] <= entry["high"]


def test_evaluate_bad_pairs_is_one_sentence_before_loading(tmp_path, monkeypatch, capsys):
    bad = _write(tmp_path / "bad.tsv", "a\tb\t1\nc\td\tx\ne\tf\t2\n")
    before = snapshot(tmp_path)
    code, _, err = run_cli(["evaluate", "no/such/model", "--pairs", str(bad)], monkeypatch, capsys)
    assert_one_sentence_error(code, err, "score 'x' is not a finite number")
    assert code == 2 and snapshot(tmp_path) == before
