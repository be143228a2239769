"""The corpus embedding bank and its faiss index (DESIGN.md ``index`` layer)."""

from hardcse.index.bank import (
    ENCODE_MODES,
    INDEX_KINDS,
    CorpusIndex,
    bank_fingerprint,
    duplicate_groups,
    encode_corpus,
    head_applied,
)

__all__ = [
    "ENCODE_MODES",
    "INDEX_KINDS",
    "CorpusIndex",
    "bank_fingerprint",
    "duplicate_groups",
    "encode_corpus",
    "head_applied",
]
