"""A user's own labelled sentence pairs: for checkpoint selection (``--dev``) and scoring
(``--test``, ``hardcse evaluate --pairs``).

A *pair set* is named by one string, resolved in this order:

1. a built-in domain (``STS-B:captions``, ``STS-B:news``, ``STS-B:forums``, ``SICK``): the
   role's split of it (``dev`` for selection, ``test`` for scoring), see :mod:`hardcse.data.domains`;
2. a file: ``.tsv``/``.txt`` (tab-separated, no quoting), ``.csv`` (comma-separated, with CSV
   quoting) or ``.jsonl`` (one JSON object, or ``[sentence1, sentence2, score]`` list, per line);
   a header row naming ``sentence1``, ``sentence2`` and ``score`` is used when present, otherwise
   the first three columns are taken in that order;
3. a directory written by ``datasets``' ``save_to_disk``, or a ``datasets`` name (``name`` or
   ``name:split``), with the same column names.

``columns`` (``--pair-columns s1,s2,label``) names the two sentence columns and the score column
instead (or, for files without a header, their 0-based positions: ``0,1,4``).

Anything wrong is one :class:`~hardcse.errors.DataError` sentence naming the file and line:
an empty or non-UTF-8 file, missing columns, a score that is not a finite number, fewer than
:data:`MIN_PAIRS` pairs, or scores that are all equal (Spearman is then undefined).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hardcse.data.domains import canonical_domain, domain_pairs
from hardcse.data.sts import STSPairs, _normalize
from hardcse.errors import ConfigError, DataError

#: Fewest pairs a pair set may hold (a Spearman correlation over fewer says nothing).
MIN_PAIRS = 3
#: Column names looked for when ``columns`` is not given.
DEFAULT_COLUMNS: tuple[str, str, str] = ("sentence1", "sentence2", "score")
#: File suffixes read as tab-separated, comma-separated and JSON lines.
TSV_SUFFIXES = (".tsv", ".txt", ".tab")
CSV_SUFFIXES = (".csv",)
JSONL_SUFFIXES = (".jsonl", ".ndjson")
_MAX_FILE_BYTES = 2 * 1024**3


@dataclass
class PairSet:
    """A named, loaded pair set: ``name`` is how reports show it (a domain name or the file name)."""

    name: str
    source: str
    pairs: STSPairs

    def sentences(self) -> set[str]:
        return set(self.pairs.sentences1) | set(self.pairs.sentences2)


def parse_columns(columns: str | Sequence[str | int] | None) -> tuple[str, str, str] | None:
    """``"s1,s2,label"`` or a 3-item list -> three column names (positions as strings); None stays None."""
    if columns is None:
        return None
    items = [c.strip() for c in columns.split(",")] if isinstance(columns, str) else [str(c).strip() for c in columns]
    if len(items) != 3 or not all(items):
        raise ConfigError(
            f"pair columns take three names: sentence 1, sentence 2 and score (e.g. s1,s2,label), got '{columns}'."
        )
    return items[0], items[1], items[2]


def load_pair_set(
    spec: str,
    split: str,
    data_dir: str | Path | None = None,
    columns: Sequence[str] | None = None,
) -> PairSet:
    """Resolve and read one pair set (see the module docstring); ``split`` is the role's split of a
    built-in domain (``dev`` or ``test``) and the default split of a ``datasets`` name."""
    spec = str(spec).strip()
    if not spec:
        raise ConfigError("an empty pair set name was given; pass a file or a domain such as STS-B:captions.")
    cols = parse_columns(columns)
    path = Path(spec).expanduser()
    if not path.exists():
        domain = canonical_domain(spec)
        if domain is not None:
            pairs = domain_pairs(domain, split, data_dir)
            return PairSet(domain, domain, _checked(pairs, f"{domain} ({split})"))
    if path.is_dir():
        pairs = _read_dataset_dir(path, cols)
    elif path.exists():
        pairs = read_pair_file(path, cols)
    elif path.suffix.lower() in (*TSV_SUFFIXES, *CSV_SUFFIXES, *JSONL_SUFFIXES, ".json"):
        raise DataError(f"pair file '{spec}' does not exist.")
    else:
        pairs = _read_dataset_name(spec, split, cols)
    return PairSet(path.name if path.exists() else spec, str(path.resolve()) if path.exists() else spec, pairs)


def read_pair_file(path: str | Path, columns: Sequence[str] | None = None) -> STSPairs:
    """Read a TSV, CSV or JSONL pair file (format by suffix; see the module docstring)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (*TSV_SUFFIXES, *CSV_SUFFIXES, *JSONL_SUFFIXES):
        raise DataError(
            f"pair file '{path}' has an unknown format '{suffix or '(no suffix)'}'; use .tsv, .csv or .jsonl."
        )
    if not path.is_file():
        raise DataError(f"pair file '{path}' is not a regular file.")
    if path.stat().st_size > _MAX_FILE_BYTES:
        raise DataError(f"pair file '{path}' is larger than 2 GiB; split it or use a `datasets` directory.")
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(f"pair file '{path}' is not valid UTF-8 (line {line}); re-encode it as UTF-8.") from None
    if not text.strip():
        raise DataError(f"pair file '{path}' is empty.")
    cols = parse_columns(columns)
    if suffix in JSONL_SUFFIXES:
        rows = _jsonl_rows(path, text, cols)
    else:
        rows = _delimited_rows(path, text, "," if suffix in CSV_SUFFIXES else "\t", cols)
    s1 = [r[1] for r in rows]
    s2 = [r[2] for r in rows]
    scores = [_score(r[3], path, r[0]) for r in rows]
    return _checked(STSPairs(path.name, s1, s2, np.array(scores, dtype=np.float64)), f"pair file '{path}'")


# --------------------------------------------------------------------------------------------
# Formats: each gives (line number, sentence1, sentence2, raw score)

Row = tuple[int, str, str, object]


def _delimited_rows(path: Path, text: str, delimiter: str, cols: tuple[str, str, str] | None) -> list[Row]:
    quoting = csv.QUOTE_MINIMAL if delimiter == "," else csv.QUOTE_NONE
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, quoting=quoting)
    records = [(n, row) for n, row in enumerate(reader, start=1) if any(cell.strip() for cell in row)]
    if not records:
        raise DataError(f"pair file '{path}' is empty.")
    header = [cell.strip() for cell in records[0][1]]
    wanted = cols or DEFAULT_COLUMNS
    if all(name in header for name in wanted):
        positions = [header.index(name) for name in wanted]
        records = records[1:]
    elif cols is not None and all(c.isdigit() for c in cols):
        positions = [int(c) for c in cols]
    elif cols is not None:
        missing = [c for c in cols if c not in header]
        raise DataError(
            f"pair file '{path}' has no column {', '.join(repr(m) for m in missing)} in its header "
            f"({', '.join(h[:30] for h in header[:8])}); name existing columns with --pair-columns."
        )
    elif any(name in header for name in DEFAULT_COLUMNS):
        missing = [c for c in DEFAULT_COLUMNS if c not in header]
        raise DataError(
            f"pair file '{path}' has a header without column {', '.join(repr(m) for m in missing)}; "
            "name the columns sentence1, sentence2 and score, or choose them with --pair-columns."
        )
    else:
        positions = [0, 1, 2]
    rows: list[Row] = []
    width = max(positions) + 1
    for number, row in records:
        if len(row) < width:
            raise DataError(
                f"pair file '{path}', line {number}: expected at least {width} columns "
                f"('{'tab' if delimiter == chr(9) else delimiter}'-separated) but found {len(row)}."
            )
        rows.append((number, _normalize(row[positions[0]]), _normalize(row[positions[1]]), row[positions[2]]))
    return rows


def _jsonl_rows(path: Path, text: str, cols: tuple[str, str, str] | None) -> list[Row]:
    wanted = cols or DEFAULT_COLUMNS
    rows: list[Row] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise DataError(f"pair file '{path}', line {number}: not valid JSON.") from None
        if isinstance(item, list):
            positions = [int(c) for c in cols] if cols and all(c.isdigit() for c in cols) else [0, 1, 2]
            if len(item) <= max(positions):
                raise DataError(f"pair file '{path}', line {number}: a list of {len(item)} items, expected 3.")
            values = [item[p] for p in positions]
        elif isinstance(item, dict):
            missing = [c for c in wanted if c not in item]
            if missing:
                raise DataError(
                    f"pair file '{path}', line {number}: no key {', '.join(repr(m) for m in missing)}; "
                    "name the keys sentence1, sentence2 and score, or choose them with --pair-columns."
                )
            values = [item[c] for c in wanted]
        else:
            raise DataError(f"pair file '{path}', line {number}: expected a JSON object or list.")
        if not isinstance(values[0], str) or not isinstance(values[1], str):
            raise DataError(f"pair file '{path}', line {number}: the two sentences must be strings.")
        rows.append((number, _normalize(values[0]), _normalize(values[1]), values[2]))
    return rows


def _read_dataset_dir(path: Path, cols: tuple[str, str, str] | None) -> STSPairs:
    from datasets import DatasetDict, load_from_disk

    try:
        loaded = load_from_disk(str(path))
    except Exception as err:  # noqa: BLE001 - datasets raises many types for a foreign directory
        raise DataError(
            f"'{path}' is a directory but not a saved `datasets` dataset ({str(err).splitlines()[0][:120]})."
        ) from None
    if isinstance(loaded, DatasetDict):
        raise DataError(f"'{path}' holds several splits ({', '.join(loaded)}); pass one split's directory.")
    return _from_table(loaded, str(path), cols)


def _read_dataset_name(spec: str, split: str, cols: tuple[str, str, str] | None) -> STSPairs:
    from datasets import load_dataset

    name, _, chosen = spec.partition(":")
    try:
        loaded = load_dataset(name, split=chosen or split)
    except Exception as err:  # noqa: BLE001 - a missing name/split raises many types
        raise DataError(
            f"pair set '{spec}' is neither a file, a built-in domain nor a loadable dataset "
            f"({str(err).splitlines()[0][:120] if str(err) else type(err).__name__})."
        ) from None
    return _from_table(loaded, spec, cols)


def _from_table(table, where: str, cols: tuple[str, str, str] | None) -> STSPairs:  # noqa: ANN001 - a Dataset
    wanted = cols or DEFAULT_COLUMNS
    missing = [c for c in wanted if c not in table.column_names]
    if missing:
        raise DataError(
            f"dataset '{where}' has no column {', '.join(repr(m) for m in missing)}; its columns are "
            f"{', '.join(table.column_names[:12])} (choose them with --pair-columns)."
        )
    s1, s2, raw = (table[c] for c in wanted)
    for number, (a, b) in enumerate(zip(s1, s2, strict=True), start=1):
        if not isinstance(a, str) or not isinstance(b, str):
            raise DataError(f"dataset '{where}', row {number}: the two sentences must be strings.")
    scores = [_score(v, Path(where), n) for n, v in enumerate(raw, start=1)]
    pairs = STSPairs(Path(where).name, [_normalize(a) for a in s1], [_normalize(b) for b in s2], np.array(scores))
    return _checked(pairs, f"dataset '{where}'")


def _score(value: object, path: Path, number: int) -> float:
    if isinstance(value, bool):
        value = math.nan
    try:
        score = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        score = math.nan
    if not math.isfinite(score):
        shown = str(value).strip()[:40]
        raise DataError(f"'{path}', line {number}: score '{shown}' is not a finite number.")
    return score


def _checked(pairs: STSPairs, where: str) -> STSPairs:
    if len(pairs) < MIN_PAIRS:
        raise DataError(f"{where} has {len(pairs)} pair(s); a Spearman correlation needs at least {MIN_PAIRS}.")
    if np.all(pairs.scores == pairs.scores[0]):
        raise DataError(
            f"{where}: every pair has the same score ({pairs.scores[0]:g}), so Spearman's correlation is undefined."
        )
    empty = next(
        (i for i, (a, b) in enumerate(zip(pairs.sentences1, pairs.sentences2, strict=True)) if not a or not b), None
    )
    if empty is not None:
        raise DataError(f"{where}: pair {empty + 1} has an empty sentence.")
    return pairs


def unique_names(sets: list[PairSet]) -> list[PairSet]:
    """``sets`` with every name made unique (``pairs.tsv``, ``pairs.tsv (2)``), so two files of the
    same name in different folders are reported apart; a set named twice is refused."""
    seen: dict[str, int] = {}
    sources: set[str] = set()
    for pair_set in sets:
        if pair_set.source in sources:
            raise ConfigError(f"the pair set '{pair_set.source}' is given twice; name each one once.")
        sources.add(pair_set.source)
        count = seen.get(pair_set.name, 0) + 1
        seen[pair_set.name] = count
        if count > 1:
            pair_set.name = f"{pair_set.name} ({count})"
    return sets


def overlap_warning(pair_set: PairSet, corpus: set[str], role: str) -> str | None:
    """The leakage warning when ``pair_set`` shares sentences with the training corpus (else None)."""
    sentences = pair_set.sentences()
    shared = len(sentences & corpus)
    if not shared:
        return None
    return (
        f"the {role} pairs '{pair_set.name}' share {shared} of their {len(sentences)} distinct sentences with the "
        "training corpus; their scores will flatter the model (remove those sentences from the corpus or the pairs)."
    )
