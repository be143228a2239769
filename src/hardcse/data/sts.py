"""Loaders for the STS evaluation sets in SentEval's layout.

Reproduces the reading rules of the SentEval fork used by SimCSE, ClusterNS and HSimCSE
(``SentEval/senteval/sts.py``), so scores computed on these pairs are comparable with the
papers:

* **STS12-16** (``STS/STS1X-en-test/``): ``STS.input.<set>.txt`` holds ``sentence1<TAB>sentence2``
  per line and ``STS.gs.<set>.txt`` the aligned gold score (0-5). Pairs whose gold line is
  blank were not officially scored and are dropped (STS15/16 have many). Sub-datasets come in
  SentEval's loader order; STS13 has no SMT subset (licence).
* **STS-B** (``STS/STSBenchmark/sts-{train,dev,test}.csv``): tab-separated without a header and
  *without CSV quoting* (sentences contain stray ``"``); columns 4, 5, 6 are score, sentence1,
  sentence2. Some rows carry two extra attribution columns (9 instead of 7); they are ignored.
* **SICK-R** (``SICK/SICK_{train,trial,test_annotated}.txt``, trial = dev): tab-separated with a
  header line; the test file has Windows line endings.

Every line is decoded as UTF-8 and stripped of ``\\r``; each sentence is split on whitespace and
re-joined with single spaces, exactly what SentEval hands to the model (its batcher re-joins
the whitespace tokens). Malformed input (bad UTF-8, a gold score that is not a number, a wrong
column count, input and gold files of different length) raises :class:`~hardcse.errors.DataError`
naming the file and line. Pair counts are compared with the official releases' sizes and a
mismatch is logged as a warning (another copy may legitimately differ).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hardcse.data.paths import DATA_ENV, resolve_data_dir
from hardcse.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

#: The seven STS tasks of the literature, in the papers' table order.
TASKS: tuple[str, ...] = (
    "STS12",
    "STS13",
    "STS14",
    "STS15",
    "STS16",
    "STSBenchmark",
    "SICKRelatedness",
)

#: STS12-16: sub-datasets in SentEval's loader order.
STS_SUBSETS: dict[str, tuple[str, ...]] = {
    "STS12": ("MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews"),
    "STS13": ("FNWN", "headlines", "OnWN"),
    "STS14": ("deft-forum", "deft-news", "headlines", "images", "OnWN", "tweet-news"),
    "STS15": ("answers-forums", "answers-students", "belief", "headlines", "images"),
    "STS16": ("answer-answer", "headlines", "plagiarism", "postediting", "question-question"),
}

#: Tasks with train/dev/test splits (the others only have a test set).
SPLIT_TASKS: tuple[str, ...] = ("STSBenchmark", "SICKRelatedness")

#: Valid values of ``split``.
SPLITS: tuple[str, ...] = ("test", "dev", "train")

#: Case-insensitive aliases (keys are lower case) -> canonical task name.
TASK_ALIASES: dict[str, str] = {
    **{t.lower(): t for t in TASKS},
    **{f"sts20{y}": f"STS{y}" for y in ("12", "13", "14", "15", "16")},
    "sts-b": "STSBenchmark",
    "stsb": "STSBenchmark",
    "sts_b": "STSBenchmark",
    "sts-benchmark": "STSBenchmark",
    "sick-r": "SICKRelatedness",
    "sickr": "SICKRelatedness",
    "sick_r": "SICKRelatedness",
    "sick": "SICKRelatedness",
    "sick-relatedness": "SICKRelatedness",
}

#: The column headers of the papers' tables.
DISPLAY_NAMES: dict[str, str] = {
    **{t: t for t in STS_SUBSETS},
    "STSBenchmark": "STS-B",
    "SICKRelatedness": "SICK-R",
}

#: Short lower-case names, used in metric keys (``eval_stsb_spearman``).
METRIC_NAMES: dict[str, str] = {
    **{t: t.lower() for t in STS_SUBSETS},
    "STSBenchmark": "stsb",
    "SICKRelatedness": "sickr",
}

#: Pair counts of the official releases (SentEval's copies of STS12-16, STS-B and SICK).
KNOWN_SIZES: dict[tuple[str, str], int] = {
    ("STS12", "MSRpar"): 750,
    ("STS12", "MSRvid"): 750,
    ("STS12", "SMTeuroparl"): 459,
    ("STS12", "surprise.OnWN"): 750,
    ("STS12", "surprise.SMTnews"): 399,
    ("STS13", "FNWN"): 189,
    ("STS13", "headlines"): 750,
    ("STS13", "OnWN"): 561,
    ("STS14", "deft-forum"): 450,
    ("STS14", "deft-news"): 300,
    ("STS14", "headlines"): 750,
    ("STS14", "images"): 750,
    ("STS14", "OnWN"): 750,
    ("STS14", "tweet-news"): 750,
    ("STS15", "answers-forums"): 375,
    ("STS15", "answers-students"): 750,
    ("STS15", "belief"): 375,
    ("STS15", "headlines"): 750,
    ("STS15", "images"): 750,
    ("STS16", "answer-answer"): 254,
    ("STS16", "headlines"): 249,
    ("STS16", "plagiarism"): 230,
    ("STS16", "postediting"): 244,
    ("STS16", "question-question"): 209,
    ("STSBenchmark", "train"): 5749,
    ("STSBenchmark", "dev"): 1500,
    ("STSBenchmark", "test"): 1379,
    ("SICKRelatedness", "train"): 4500,
    ("SICKRelatedness", "dev"): 500,
    ("SICKRelatedness", "test"): 4927,
}

_STSB_FILES = {"train": "sts-train.csv", "dev": "sts-dev.csv", "test": "sts-test.csv"}
_SICK_FILES = {"train": "SICK_train.txt", "dev": "SICK_trial.txt", "test": "SICK_test_annotated.txt"}
_SPLIT_ALIASES = {"test": "test", "dev": "dev", "validation": "dev", "trial": "dev", "train": "train"}


@dataclass
class STSPairs:
    """Sentence pairs with gold similarity scores (one sub-dataset or split)."""

    name: str
    sentences1: list[str]
    sentences2: list[str]
    scores: np.ndarray

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64)
        if not (len(self.sentences1) == len(self.sentences2) == len(self.scores)):
            raise ValueError(
                f"STSPairs {self.name!r}: {len(self.sentences1)} first sentences, "
                f"{len(self.sentences2)} second sentences and {len(self.scores)} scores differ in length"
            )

    def __len__(self) -> int:
        return len(self.scores)


def canonical_task(name: str) -> str:
    """Return the canonical task name for ``name`` (case-insensitive; aliases like ``STS-B``, ``sickr``).

    Raises:
        ConfigError: the name is not one of the seven tasks or their aliases.
    """
    key = str(name).strip().lower()
    if key in TASK_ALIASES:
        return TASK_ALIASES[key]
    raise ConfigError(
        f"unknown STS task '{name}'; valid tasks are {', '.join(TASKS)} "
        "(aliases such as STS-B, stsb, SICK-R and sickr also work)."
    )


def canonical_split(split: str) -> str:
    """Return ``test``, ``dev`` or ``train`` for ``split`` (``trial``/``validation`` mean ``dev``)."""
    key = str(split).strip().lower()
    if key in _SPLIT_ALIASES:
        return _SPLIT_ALIASES[key]
    raise ConfigError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}.")


def senteval_root(data_dir: str | Path | None = None) -> Path:
    """The directory holding ``STS/`` and ``SICK/`` inside the data directory.

    That is ``<data dir>/senteval``; a SentEval ``data/downstream`` directory (with ``STS/``
    directly inside) is accepted too.
    """
    base = resolve_data_dir(data_dir)
    nested = base / "senteval"
    if not nested.is_dir() and (base / "STS").is_dir():
        return base
    return nested


def task_files(task: str, split: str = "test") -> list[Path]:
    """The files ``task`` needs, relative to :func:`senteval_root` (``split`` only for STS-B, SICK-R)."""
    task = canonical_task(task)
    split = canonical_split(split)
    if task in STS_SUBSETS:
        folder = Path("STS") / f"{task}-en-test"
        files = []
        for subset in STS_SUBSETS[task]:
            files += [folder / f"STS.input.{subset}.txt", folder / f"STS.gs.{subset}.txt"]
        return files
    if task == "STSBenchmark":
        return [Path("STS") / "STSBenchmark" / _STSB_FILES[split]]
    return [Path("SICK") / _SICK_FILES[split]]


def missing_files(tasks: Iterable[str], data_dir: str | Path | None = None, split: str = "test") -> list[Path]:
    """The files (absolute paths) that ``tasks`` need and that do not exist under the data directory."""
    root = senteval_root(data_dir)
    missing: list[Path] = []
    for task in tasks:
        missing += [root / rel for rel in task_files(task, split) if not (root / rel).is_file()]
    return missing


def check_files(tasks: Iterable[str], data_dir: str | Path | None = None, split: str = "test") -> None:
    """Raise one :class:`DataError` listing every missing file ``tasks`` need."""
    tasks = list(tasks)
    missing = missing_files(tasks, data_dir, split)
    if not missing:
        return
    root = senteval_root(data_dir)
    shown = [str(p.relative_to(root)) for p in missing[:8]]
    more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
    where = (
        f"data directory {resolve_data_dir(data_dir)} does not exist"
        if not resolve_data_dir(data_dir).exists()
        else f"{len(missing)} STS data file(s) missing under {root}: {', '.join(shown)}{more}"
    )
    raise DataError(
        f"{where}; run `hardcse download` or pass --data-dir (or set {DATA_ENV}) to a directory "
        "with the senteval/STS and senteval/SICK layout."
    )


def load_task(task: str, data_dir: Path | str | None = None, split: str = "test") -> dict[str, STSPairs]:
    """Load one STS task as ``{subset name: pairs}``.

    STS12-16 give their sub-datasets in SentEval's order and always use their test data (they
    have no other split). STS-B and SICK-R give one entry named by ``split`` (``test``, ``dev``
    or ``train``; SICK's ``trial`` file is ``dev``).

    Raises:
        ConfigError: unknown task or split.
        DataError: files missing (all of them listed) or malformed (file and line named).
    """
    task = canonical_task(task)
    split = canonical_split(split)
    check_files([task], data_dir, split)
    root = senteval_root(data_dir)
    if task in STS_SUBSETS:
        folder = root / "STS" / f"{task}-en-test"
        result = {
            subset: _read_sts_subset(subset, folder / f"STS.input.{subset}.txt", folder / f"STS.gs.{subset}.txt")
            for subset in STS_SUBSETS[task]
        }
    elif task == "STSBenchmark":
        result = {split: _read_stsb(split, root / "STS" / "STSBenchmark" / _STSB_FILES[split])}
    else:
        result = {split: _read_sick(split, root / "SICK" / _SICK_FILES[split])}
    for subset, pairs in result.items():
        if len(pairs) < 2:
            raise DataError(
                f"{task} {subset} has {len(pairs)} scored pair(s) in {root}; a "
                "Spearman correlation needs at least 2, so the file is empty or truncated: re-download it."
            )
        expected = KNOWN_SIZES.get((task, subset))
        logger.info("%s %s: %d pairs", task, subset, len(pairs))
        if expected is not None and len(pairs) != expected:
            logger.warning(
                "%s %s has %d scored pairs, but the official release has %d; scores will not be "
                "comparable with the literature unless this copy is the one you mean to use.",
                task,
                subset,
                len(pairs),
                expected,
            )
    return result


def load_tasks(
    tasks: Sequence[str] | None = None, data_dir: Path | str | None = None, split: str = "test"
) -> dict[str, dict[str, STSPairs]]:
    """Load several tasks (default: all seven) as ``{task: {subset: pairs}}``.

    Every missing file of every task is reported in one :class:`DataError` before anything is
    read.
    """
    names = [canonical_task(t) for t in (TASKS if tasks is None else tasks)]
    names = list(dict.fromkeys(names))
    check_files(names, data_dir, split)
    return {task: load_task(task, data_dir, split) for task in names}


# --------------------------------------------------------------------------------------------
# Reading


def _normalize(sentence: str) -> str:
    """SentEval splits each sentence on whitespace and the batcher re-joins it with spaces."""
    return " ".join(sentence.split())


def _read_lines(path: Path) -> list[str]:
    """The lines of ``path`` as UTF-8 text, without line terminators (``\\n``, ``\\r\\n``)."""
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    chunks = raw.split(b"\n")
    if chunks and chunks[-1] == b"":
        chunks.pop()
    lines = []
    for number, chunk in enumerate(chunks, start=1):
        try:
            lines.append(chunk.rstrip(b"\r").decode("utf-8"))
        except UnicodeDecodeError as err:
            raise DataError(
                f"{path}, line {number}: not valid UTF-8 (byte {err.start + 1} of the line); "
                "re-download the file or convert it to UTF-8."
            ) from None
    return lines


def _parse_score(text: str, path: Path, number: int) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DataError(
            f"{path}, line {number}: gold score '{text.strip()[:40]}' is not a number; "
            "fix the line or re-download the file."
        )
    return value


def _column_error(path: Path, number: int, expected: str, found: int) -> DataError:
    return DataError(
        f"{path}, line {number}: expected {expected} tab-separated columns but found {found}; "
        "fix the line or re-download the file."
    )


def _read_sts_subset(name: str, input_path: Path, gold_path: Path) -> STSPairs:
    inputs = _read_lines(input_path)
    golds = _read_lines(gold_path)
    if len(inputs) != len(golds):
        raise DataError(
            f"{input_path} has {len(inputs)} lines but its gold file {gold_path.name} has {len(golds)}; "
            "the two files must be aligned line by line, so re-download them."
        )
    s1: list[str] = []
    s2: list[str] = []
    scores: list[float] = []
    for number, (line, gold) in enumerate(zip(inputs, golds, strict=True), start=1):
        if not gold.strip():
            continue  # not officially scored: SentEval drops the pair
        score = _parse_score(gold, gold_path, number)
        fields = line.split("\t")
        if len(fields) != 2:
            raise _column_error(input_path, number, "2 (sentence1, sentence2)", len(fields))
        s1.append(_normalize(fields[0]))
        s2.append(_normalize(fields[1]))
        scores.append(score)
    return STSPairs(name, s1, s2, np.array(scores, dtype=np.float64))


def _read_stsb(name: str, path: Path, genres: Sequence[str] | None = None) -> STSPairs:
    """STS-B pairs of ``path``; with ``genres``, only the rows whose first column is one of them."""
    s1: list[str] = []
    s2: list[str] = []
    scores: list[float] = []
    for number, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 7:
            raise _column_error(path, number, "7 (or 9)", len(fields))
        if genres is not None and fields[0].strip() not in genres:
            continue
        scores.append(_parse_score(fields[4], path, number))
        s1.append(_normalize(fields[5]))
        s2.append(_normalize(fields[6]))
    return STSPairs(name, s1, s2, np.array(scores, dtype=np.float64))


def _read_sick(name: str, path: Path) -> STSPairs:
    lines = _read_lines(path)
    columns = (1, 2, 3)  # pair_ID, sentence_A, sentence_B, relatedness_score, entailment_judgment
    start = 0
    if lines:
        header = [h.strip() for h in lines[0].split("\t")]
        if "sentence_A" in header:
            wanted = ("sentence_A", "sentence_B", "relatedness_score")
            if not all(w in header for w in wanted):
                raise DataError(
                    f"{path}, line 1: the header lacks one of {', '.join(wanted)}; "
                    "use the official SICK files or re-download them."
                )
            columns = tuple(header.index(w) for w in wanted)
            start = 1
    width = max(columns) + 1
    s1: list[str] = []
    s2: list[str] = []
    scores: list[float] = []
    for number, line in enumerate(lines[start:], start=start + 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < width:
            raise _column_error(path, number, f"at least {width}", len(fields))
        scores.append(_parse_score(fields[columns[2]], path, number))
        s1.append(_normalize(fields[columns[0]]))
        s2.append(_normalize(fields[columns[1]]))
    return STSPairs(name, s1, s2, np.array(scores, dtype=np.float64))
