"""STS/SICK loaders: exact counts on the real files, every file pitfall, and the error sentences."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from helpers import write_all, write_sick, write_sts_year, write_stsb

from hardcse.data import (
    TASK_ALIASES,
    TASKS,
    STSPairs,
    canonical_task,
    load_task,
    load_tasks,
    resolve_data_dir,
)
from hardcse.data.sts import KNOWN_SIZES, STS_SUBSETS, senteval_root
from hardcse.errors import ConfigError, DataError

# ---------------------------------------------------------------------------------------------
# The real files (the official releases in SentEval's layout)

EXPECTED = {
    "STS12": {
        "MSRpar": 750,
        "MSRvid": 750,
        "SMTeuroparl": 459,
        "surprise.OnWN": 750,
        "surprise.SMTnews": 399,
    },
    "STS13": {"FNWN": 189, "headlines": 750, "OnWN": 561},
    "STS14": {
        "deft-forum": 450,
        "deft-news": 300,
        "headlines": 750,
        "images": 750,
        "OnWN": 750,
        "tweet-news": 750,
    },
    "STS15": {"answers-forums": 375, "answers-students": 750, "belief": 375, "headlines": 750, "images": 750},
    "STS16": {
        "answer-answer": 254,
        "headlines": 249,
        "plagiarism": 230,
        "postediting": 244,
        "question-question": 209,
    },
}
TOTALS = {"STS12": 3108, "STS13": 1500, "STS14": 3750, "STS15": 3000, "STS16": 1186}


@pytest.mark.parametrize("task", list(EXPECTED))
def test_real_sts_years_counts_and_order(data_dir, task, caplog):
    with caplog.at_level(logging.WARNING):
        subsets = load_task(task, data_dir)
    assert list(subsets) == list(EXPECTED[task])  # SentEval's loader order
    assert {name: len(p) for name, p in subsets.items()} == EXPECTED[task]
    assert sum(len(p) for p in subsets.values()) == TOTALS[task]
    assert not caplog.records  # no count-mismatch warning on the official files
    for pairs in subsets.values():
        assert pairs.scores.dtype == np.float64
        assert pairs.scores.min() >= 0 and pairs.scores.max() <= 5
        assert all(s and s == " ".join(s.split()) for s in pairs.sentences1 + pairs.sentences2)


@pytest.mark.parametrize(
    "task, split, n",
    [
        ("STSBenchmark", "train", 5749),
        ("STSBenchmark", "dev", 1500),
        ("STSBenchmark", "test", 1379),
        ("SICKRelatedness", "train", 4500),
        ("SICKRelatedness", "dev", 500),
        ("SICKRelatedness", "test", 4927),
    ],
)
def test_real_stsb_and_sick_counts(data_dir, task, split, n):
    result = load_task(task, data_dir, split)
    assert list(result) == [split]
    pairs = result[split]
    assert len(pairs) == n
    low = 1 if task == "SICKRelatedness" else 0
    assert pairs.scores.min() >= low and pairs.scores.max() <= 5
    # No carriage return or header survives (SICK test has CRLF endings and every SICK file a header).
    assert not any("\r" in s or s == "sentence_A" for s in pairs.sentences1 + pairs.sentences2)


def test_real_first_pairs(data_dir):
    stsb = load_task("STS-B", data_dir)["test"]
    assert stsb.sentences1[0] == "A girl is styling her hair."
    assert stsb.sentences2[0] == "A girl is brushing her hair."
    assert stsb.scores[0] == 2.5
    sick = load_task("sickr", data_dir, "train")["train"]
    assert sick.sentences1[0].startswith("A group of kids is playing in a yard")
    assert sick.scores[0] == 4.5


def test_load_tasks_defaults_to_all_seven(data_dir):
    data = load_tasks(data_dir=data_dir)
    assert list(data) == list(TASKS)


# ---------------------------------------------------------------------------------------------
# Names


def test_task_aliases_are_case_insensitive():
    assert canonical_task("STS-B") == canonical_task("stsb") == canonical_task("StsBenchmark") == "STSBenchmark"
    assert canonical_task("SICK-R") == canonical_task("sickr") == "SICKRelatedness"
    assert canonical_task("sts12") == "STS12"
    assert all(key == key.lower() for key in TASK_ALIASES)


def test_unknown_task_lists_valid_ones():
    with pytest.raises(ConfigError) as err:
        canonical_task("STS17")
    message = str(err.value)
    assert "STS17" in message and all(t in message for t in TASKS)


def test_unknown_split():
    with pytest.raises(ConfigError, match="unknown split 'validate'"):
        load_task("STS-B", split="validate")


def test_pairs_length_must_agree():
    assert len(STSPairs("x", ["a"], ["b"], [1.0])) == 1
    with pytest.raises(ValueError):
        STSPairs("x", ["a", "b"], ["b"], [1.0])


# ---------------------------------------------------------------------------------------------
# Data directory


def test_resolve_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("HARDCSE_DATA", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("HARDCSE_DATA")
    assert resolve_data_dir(None) == Path.home() / ".cache" / "hardcse" / "data"
    assert resolve_data_dir("~/x") == Path.home() / "x"


def test_senteval_downstream_layout_is_accepted(tmp_path):
    write_all(tmp_path)
    downstream = tmp_path / "senteval"  # STS/ and SICK/ directly inside, like SentEval/data/downstream
    assert senteval_root(downstream) == downstream
    assert len(load_task("STS13", downstream)["FNWN"]) == 4


# ---------------------------------------------------------------------------------------------
# File pitfalls on hand-made files


def test_blank_gold_lines_are_skipped(tmp_path):
    write_sts_year(tmp_path, "STS16", pairs=6, blank_every=2)
    pairs = load_task("STS16", tmp_path)["headlines"]
    assert len(pairs) == 6
    assert not any(s.startswith("unscored") for s in pairs.sentences1)


def test_whitespace_is_normalised_and_crlf_stripped(tmp_path):
    write_sts_year(tmp_path, "STS13", pairs=2)
    folder = tmp_path / "senteval" / "STS" / "STS13-en-test"
    (folder / "STS.input.FNWN.txt").write_bytes(b"  a  man\t plays \r\nthe cat\tsleeps  \r\n")
    (folder / "STS.gs.FNWN.txt").write_bytes(b"4.0\r\n 1.5 \r\n")
    pairs = load_task("STS13", tmp_path)["FNWN"]
    assert pairs.sentences1 == ["a man", "the cat"]
    assert pairs.sentences2 == ["plays", "sleeps"]
    assert pairs.scores.tolist() == [4.0, 1.5]


def test_stsb_extra_columns_and_quotes(tmp_path):
    write_stsb(tmp_path, pairs=5)
    pairs = load_task("STS-B", tmp_path, "dev")["dev"]
    assert len(pairs) == 5
    assert pairs.sentences1[1].endswith('"quoted')  # no CSV quote handling
    assert "source-a" not in pairs.sentences2  # the 9-column row keeps columns 4-6 only


def test_sick_header_crlf_and_headerless(tmp_path):
    write_sick(tmp_path, pairs=5)
    test = load_task("SICK-R", tmp_path, "test")["test"]
    assert len(test) == 5 and test.scores[0] == 1.0
    path = tmp_path / "senteval" / "SICK" / "SICK_train.txt"
    path.write_text("\n".join(path.read_text().splitlines()[1:]) + "\n")  # header removed
    assert len(load_task("SICK-R", tmp_path, "train")["train"]) == 5


def test_count_mismatch_is_a_warning(tmp_path, caplog):
    write_sts_year(tmp_path, "STS13", pairs=3)
    with caplog.at_level(logging.WARNING, logger="hardcse"):
        load_task("STS13", tmp_path)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 3 and "FNWN has 3 scored pairs, but the official release has 189" in warned[0]
    assert KNOWN_SIZES[("STS13", "FNWN")] == 189


# ---------------------------------------------------------------------------------------------
# Errors: one sentence naming file and line


def _sts13(tmp_path) -> Path:
    write_sts_year(tmp_path, "STS13", pairs=4)
    return tmp_path / "senteval" / "STS" / "STS13-en-test"


def test_malformed_gold_score_names_file_and_line(tmp_path):
    folder = _sts13(tmp_path)
    (folder / "STS.gs.OnWN.txt").write_text("1.0\n2.0\nabc\n4.0\n")
    with pytest.raises(DataError) as err:
        load_task("STS13", tmp_path)
    assert str(err.value).startswith(f"{folder / 'STS.gs.OnWN.txt'}, line 3: gold score 'abc' is not a number")


def test_nan_gold_score_is_malformed(tmp_path):
    write_stsb(tmp_path)
    path = tmp_path / "senteval" / "STS" / "STSBenchmark" / "sts-test.csv"
    lines = path.read_text().splitlines()
    cols = lines[2].split("\t")
    cols[4] = "nan"
    lines[2] = "\t".join(cols)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"sts-test.csv, line 3: gold score 'nan' is not a number"):
        load_task("STS-B", tmp_path)


def test_wrong_column_count_names_file_and_line(tmp_path):
    folder = _sts13(tmp_path)
    lines = (folder / "STS.input.headlines.txt").read_text().splitlines()
    lines[1] = lines[1].replace("\t", " ")
    (folder / "STS.input.headlines.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"STS.input.headlines.txt, line 2: expected 2 .* but found 1"):
        load_task("STS13", tmp_path)


def test_stsb_too_few_columns(tmp_path):
    write_stsb(tmp_path)
    path = tmp_path / "senteval" / "STS" / "STSBenchmark" / "sts-test.csv"
    path.write_text(path.read_text() + "genre\tfile\t2012\t0001\t3.0\tonly one sentence\n")
    with pytest.raises(DataError, match=r"sts-test.csv, line 6: expected 7 \(or 9\) .* found 6"):
        load_task("STS-B", tmp_path)


def test_bad_utf8_names_file_and_line(tmp_path):
    write_sick(tmp_path)
    path = tmp_path / "senteval" / "SICK" / "SICK_trial.txt"
    lines = path.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b"a", b"\xff", 1)
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(DataError, match=r"SICK_trial.txt, line 4: not valid UTF-8"):
        load_task("SICK-R", tmp_path, "dev")


def test_input_and_gold_of_different_length(tmp_path):
    folder = _sts13(tmp_path)
    (folder / "STS.gs.FNWN.txt").write_text("1\n2\n3\n")
    with pytest.raises(DataError, match="has 4 lines but its gold file STS.gs.FNWN.txt has 3"):
        load_task("STS13", tmp_path)


def test_missing_files_are_all_listed(tmp_path):
    _sts13(tmp_path)
    folder = tmp_path / "senteval" / "STS" / "STS13-en-test"
    (folder / "STS.gs.OnWN.txt").unlink()
    (folder / "STS.input.FNWN.txt").unlink()
    with pytest.raises(DataError) as err:
        load_tasks(["STS13", "STS-B"], tmp_path)
    message = str(err.value)
    assert "3 STS data file(s) missing" in message
    for name in ("STS.gs.OnWN.txt", "STS.input.FNWN.txt", "sts-test.csv"):
        assert name in message
    assert "hardcse download" in message and "--data-dir" in message and "HARDCSE_DATA" in message
    assert message.count(". ") == 0  # one sentence


def test_missing_data_dir(tmp_path):
    with pytest.raises(DataError, match=r"data directory .*nowhere does not exist; run `hardcse download`"):
        load_task("STS12", tmp_path / "nowhere")


def test_every_sts_subset_is_read(tmp_path):
    write_all(tmp_path)
    data = load_tasks(data_dir=tmp_path)
    for task, subsets in STS_SUBSETS.items():
        assert list(data[task]) == list(subsets)
        assert all(len(p) == 4 for p in data[task].values())
