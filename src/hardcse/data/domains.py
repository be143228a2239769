"""Built-in domains from the shipped STS data: labelled pairs for selection and scoring, and an
unlabelled in-domain corpus for training.

STS-B (Cer et al., 2017) mixes three genres, each a small domain of its own: image and video
``captions``, ``news`` headlines and ``forums`` (question and answer forums). SICK (Marelli et al.,
2014) is a fourth. Each domain gives

* **pairs** (:func:`domain_pairs`): the genre's rows of STS-B's ``dev`` or ``test`` split (SICK:
  its trial or test file), used as ``--dev STS-B:captions`` (selection) and
  ``--test STS-B:captions`` (scoring);
* **a corpus** (:func:`domain_corpus`): the distinct sentences of the genre's *train* split,
  without labels, as ``--corpus STS-B:captions``.

No sentence of any dev or test split of STS-B or SICK enters a domain corpus: STS-B's train split
reuses sentences of the other splits (captions: about 350 of its distinct sentences also stand in
dev or test), so they are removed, for every genre at once. The seven general tasks are another
matter: STS-B was assembled from the STS 2012-2016 data, so most of a genre's train sentences also
occur (unlabelled) in STS12-16 test sets; removing them would leave almost nothing (captions: 684
of 3,029 sentences, forums: none). The seven-task average after in-domain training is therefore a
measure of forgetting on sentences partly seen without labels, which is stated wherever it is
reported.

The forum genre is labelled ``main-forum`` in STS-B's train file but ``main-forums`` in dev and
test; both spellings belong to ``STS-B:forums``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from hardcse.data.sts import STSPairs, canonical_split, check_files, senteval_root
from hardcse.errors import ConfigError

#: STS-B genres by domain name: the genre labels of the csv files' first column.
STSB_GENRES: dict[str, tuple[str, ...]] = {
    "captions": ("main-captions",),
    "news": ("main-news",),
    "forums": ("main-forum", "main-forums"),
}

#: Every built-in domain name (``STS-B:<genre>`` and ``SICK``).
DOMAINS: tuple[str, ...] = (*(f"STS-B:{g}" for g in STSB_GENRES), "SICK")


def canonical_domain(spec: str) -> str | None:
    """The canonical domain name for ``spec`` (case-insensitive; ``stsb:captions``, ``SICK-R``), or
    ``None`` when ``spec`` names no built-in domain."""
    key = str(spec).strip().lower().replace("_", "-")
    if key in ("sick", "sick-r", "sickr"):
        return "SICK"
    prefix, sep, genre = key.partition(":")
    if sep and prefix in ("sts-b", "stsb") and genre in STSB_GENRES:
        return f"STS-B:{genre}"
    if sep and prefix in ("sts-b", "stsb"):
        raise ConfigError(f"unknown STS-B genre '{genre}'; choose one of {', '.join(STSB_GENRES)}.")
    return None


def domain_pairs(domain: str, split: str, data_dir: str | Path | None = None) -> STSPairs:
    """The labelled pairs of ``domain`` in ``split`` (``dev`` or ``test``; ``train`` too, for
    inspection: training never reads labels)."""
    name = canonical_domain(domain)
    if name is None:
        raise ConfigError(f"unknown domain '{domain}'; built-in domains are {', '.join(DOMAINS)}.")
    split = canonical_split(split)
    if name == "SICK":
        from hardcse.data.sts import load_task

        return next(iter(load_task("SICKRelatedness", data_dir, split).values()))
    from hardcse.data.sts import _read_stsb, task_files

    check_files(["STSBenchmark"], data_dir, split)
    path = senteval_root(data_dir) / task_files("STSBenchmark", split)[0]
    return _read_stsb(f"{name} {split}", path, STSB_GENRES[name.split(":", 1)[1]])


def held_out_sentences(data_dir: str | Path | None = None) -> set[str]:
    """Every sentence of the dev and test splits of STS-B and SICK (no domain corpus holds one)."""
    from hardcse.data.sts import load_task

    held: set[str] = set()
    for split in ("dev", "test"):
        for task in ("STSBenchmark", "SICKRelatedness"):
            for pairs in load_task(task, data_dir, split).values():
                held.update(pairs.sentences1)
                held.update(pairs.sentences2)
    return held


def domain_corpus(domain: str, data_dir: str | Path | None = None) -> list[str]:
    """The distinct train-split sentences of ``domain`` in first-seen order, without any sentence of
    a dev or test split (see the module docstring)."""
    name = canonical_domain(domain)
    if name is None:
        raise ConfigError(f"unknown domain '{domain}'; built-in domains are {', '.join(DOMAINS)}.")
    train = domain_pairs(name, "train", data_dir)
    held = held_out_sentences(data_dir)
    return [s for s in dict.fromkeys(_interleave(train.sentences1, train.sentences2)) if s not in held]


def _interleave(first: Iterable[str], second: Iterable[str]) -> list[str]:
    out: list[str] = []
    for a, b in zip(first, second, strict=True):
        out += [a, b]
    return out
