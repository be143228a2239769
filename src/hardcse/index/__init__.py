"""The corpus embedding bank and its faiss index (the ``index`` layer of docs/architecture.md)."""

from hardcse.index.bank import INDEX_KINDS, CorpusIndex, bank_fingerprint, duplicate_groups

# The model-aware encoding of a bank lives in hardcse.models.corpus_encoding; still importable from here.
from hardcse.models.corpus_encoding import ENCODE_MODES, encode_corpus, head_applied

__all__ = [
    "ENCODE_MODES",
    "INDEX_KINDS",
    "CorpusIndex",
    "bank_fingerprint",
    "duplicate_groups",
    "encode_corpus",
    "head_applied",
]
