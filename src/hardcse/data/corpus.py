"""Reading the unlabelled training corpus.

A corpus is one or more text files with one sentence per line (the format of SimCSE's
``wiki1m_for_simcse.txt``), a Hugging Face ``datasets`` name/path and a text column, or a built-in
domain's unlabelled train sentences (``STS-B:captions``, ``STS-B:news``, ``STS-B:forums``, ``SICK``;
:mod:`hardcse.data.domains`). Blank
lines are skipped (the official loader turns them into " " sentences, which only add noise).
Relative paths are looked up in the working directory first, then in the data directory.
Problems are reported as one :class:`~hardcse.errors.DataError` sentence naming file and line.
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset

from hardcse.data.domains import canonical_domain, domain_corpus
from hardcse.errors import DataError

MAX_LINE_CHARS = 100_000  # a "sentence" longer than this is a broken file, not a sentence


def _locate(spec: str, data_dir: Path | None) -> Path | None:
    path = Path(spec).expanduser()
    if path.exists():
        return path
    if data_dir is not None and not path.is_absolute() and (data_dir / path).exists():
        return data_dir / path
    return None


def read_text_file(path: Path) -> list[str]:
    """Sentences of a one-sentence-per-line UTF-8 file (blank lines skipped).

    The file is read line by line with a bounded line length, so a device such as ``/dev/zero``
    or a file without line breaks is refused instead of filling the memory.
    """
    if path.is_dir():
        raise DataError(f"corpus '{path}' is a directory; pass a text file with one sentence per line.")
    if not path.is_file():
        raise DataError(f"corpus '{path}' is not a regular file (a device or pipe?); pass a text file.")
    limit = 4 * MAX_LINE_CHARS + 1  # bytes: UTF-8 takes at most 4 per character
    sentences: list[str] = []
    try:
        with open(path, "rb") as handle:
            for number, line in enumerate(iter(lambda: handle.readline(limit), b""), start=1):
                if len(line) >= limit and not line.endswith(b"\n"):
                    raise DataError(
                        f"corpus '{path}' line {number} is longer than {MAX_LINE_CHARS:,} characters; "
                        "expected one sentence per line."
                    )
                if b"\x00" in line:
                    raise DataError(f"corpus '{path}' contains a NUL byte at line {number}; it looks binary, not text.")
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError:
                    raise DataError(
                        f"corpus '{path}' is not valid UTF-8 at line {number}; re-encode it as UTF-8."
                    ) from None
                text = text.strip()
                if not text:
                    continue
                if len(text) > MAX_LINE_CHARS:
                    raise DataError(
                        f"corpus '{path}' line {number} has {len(text):,} characters; expected one sentence per line."
                    )
                sentences.append(text)
    except OSError as err:
        raise DataError(f"corpus '{path}' cannot be read ({err.strerror or err}).") from None
    return sentences


def resolve_corpus_paths(specs: list[str], data_dir: Path | None = None) -> list[str]:
    """``specs`` with every local file as an absolute path (datasets names stay as they are), so
    a saved ``config.yaml`` finds its corpus from any working directory."""
    resolved = []
    for spec in specs:
        path = _locate(spec, data_dir)
        resolved.append(str(path.resolve()) if path is not None else spec)
    return resolved


def _read_dataset(spec: str, column: str) -> list[str]:
    from datasets import load_dataset

    try:
        loaded = load_dataset(spec, split="train")
    except Exception as err:  # datasets raises many types for a missing name/path
        raise DataError(
            f"corpus '{spec}' is neither a file nor a loadable dataset ({str(err).splitlines()[0]})."
        ) from None
    if column not in loaded.column_names:
        raise DataError(
            f"dataset '{spec}' has no column '{column}'; its columns are {', '.join(loaded.column_names)} "
            "(choose one with --corpus-column)."
        )
    return [s.strip() for s in loaded[column] if isinstance(s, str) and s.strip()]


def read_corpus(
    specs: list[str], data_dir: Path | None = None, column: str = "text", max_sentences: int | None = None
) -> list[str]:
    """All sentences of the corpus files/datasets in ``specs``, in order."""
    sentences: list[str] = []
    for spec in specs:
        path = _locate(spec, data_dir)
        domain = canonical_domain(spec) if path is None else None
        if path is not None:
            got = read_text_file(path)
            if not got:
                raise DataError(f"corpus '{path}' has no sentences (it is empty or holds only blank lines).")
        elif domain is not None:
            got = domain_corpus(domain, data_dir)
        elif Path(spec).suffix in (".txt", ".text") or "/" in spec and not _looks_like_hub(spec):
            where = f" (nor in the data directory {data_dir})" if data_dir is not None else ""
            raise DataError(
                f"corpus file '{spec}' does not exist{where}; pass an existing file with --corpus "
                "or run `hardcse download` to get the official wiki1m corpus."
            )
        else:
            got = _read_dataset(spec, column)
        sentences.extend(got)
        if max_sentences is not None and len(sentences) >= max_sentences:
            return sentences[:max_sentences]
    if not sentences:
        raise DataError("the corpus has no sentences.")
    return sentences


def _looks_like_hub(spec: str) -> bool:
    # "owner/name" with no further slashes and no file suffix.
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and "." not in parts[1][-5:]


def corpus_dataset(sentences: list[str]) -> Dataset:
    """The training dataset: one ``text`` column and ``label`` = the sentence's corpus row.

    The row id lets parts that look sentences up in a corpus index exclude the sentence itself.
    """
    return Dataset.from_dict({"text": sentences, "label": list(range(len(sentences)))})
