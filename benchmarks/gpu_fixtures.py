"""Inputs for ``benchmarks/gpu_check.py`` built on the spot: no model, corpus or STS file is fetched.

The accelerator machine reaches nothing outside itself and only 64 MiB travel with the working
tree, so the check builds what it trains on:

* BERT-shaped encoders from a ``BertConfig`` with random weights (seeded), saved with a WordPiece
  tokenizer whose vocabulary is generated: ``[PAD] [UNK] [CLS] [SEP] [MASK]``, the letters and
  digits (plain and ``##``-prefixed, so any word can be spelt), then pronounceable words
  (consonant-vowel syllables, two then three of them) until the vocabulary has the wanted size.
  :data:`BERT_BASE` is bert-base-uncased's shape (hidden 768, 12 layers, 12 heads, feed-forward
  3072, vocabulary 30,522, 512 positions: 109.5M parameters).
* A corpus of sentences drawn from those words (each word one token), and a small STS-B
  (``sts-dev.csv``, ``sts-test.csv`` in SentEval's layout) whose second sentence replaces ``k``
  words of the first and whose gold score is ``5 (1 - k / length)``.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from pathlib import Path

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_CONSONANTS = "bcdfghjklmnprstvwz"
_VOWELS = "aeiou"


@dataclass(frozen=True)
class BertShape:
    """The size of a BERT encoder (``transformers.BertConfig`` fields)."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    positions: int = 512
    dropout: float = 0.1

    def describe(self) -> str:
        return (
            f"hidden {self.hidden}, {self.layers} layers, {self.heads} heads, "
            f"feed-forward {self.intermediate}, vocabulary {self.vocab}"
        )


#: bert-base-uncased's shape (the SimCSE/ClusterNS paper presets' backbone).
BERT_BASE = BertShape(hidden=768, layers=12, heads=12, intermediate=3072, vocab=30522)
#: The small encoder every recipe is trained with (fast, but with real multi-head attention).
SMALL = BertShape(hidden=64, layers=2, heads=4, intermediate=128, vocab=1200, positions=128)
#: The dry run's stand-in for bert-base (the same code path at a CPU test's size).
TINY = BertShape(hidden=32, layers=2, heads=2, intermediate=64, vocab=600, positions=128)


def vocabulary(size: int) -> list[str]:
    """``size`` distinct WordPiece tokens: specials, characters, then generated words."""
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab = [*SPECIALS, *chars, *(f"##{c}" for c in chars)]
    syllables = [c + v for c in _CONSONANTS for v in _VOWELS]
    for n in itertools.count(2):
        for parts in itertools.product(syllables, repeat=n):
            if len(vocab) >= size:
                return vocab[:size]
            vocab.append("".join(parts))
    raise AssertionError("unreachable")


def words_of(vocab: list[str]) -> list[str]:
    """The whole words of a generated vocabulary (no specials, characters or ``##`` pieces)."""
    return [w for w in vocab if len(w) > 1 and not w.startswith(("[", "##"))]


def make_bert(path: Path, shape: BertShape, seed: int = 0) -> Path:
    """Save a random BERT of ``shape`` and its WordPiece tokenizer under ``path`` (returns it)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = vocabulary(shape.vocab)
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # transformers 5 ignores vocab_file= for the fast tokenizer (only the specials survive): pass the dict.
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    tokenizer.save_pretrained(str(path))
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate,
        max_position_embeddings=shape.positions,
        hidden_dropout_prob=shape.dropout,
        attention_probs_dropout_prob=shape.dropout,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(str(path))
    return path


def sentences(vocab: list[str], count: int, min_words: int, max_words: int, seed: int = 0) -> list[str]:
    """``count`` distinct sentences of ``min_words``..``max_words`` words of ``vocab``."""
    rng = random.Random(seed)
    words = words_of(vocab)
    out: dict[str, None] = {}
    while len(out) < count:
        n = rng.randint(min_words, max_words)
        out[" ".join(rng.choice(words) for _ in range(n))] = None
    return list(out)


def write_corpus(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_stsb(root: Path, vocab: list[str], pairs: int = 40, seed: int = 1) -> Path:
    """STS-B dev and test files (SentEval layout, 7 tab-separated columns) under ``root``.

    Pair ``i``: a sentence of 6-12 words and a copy with ``k`` of its words replaced; gold score
    ``5 (1 - k / length)``, so scores spread over 0-5 and a model that weighs shared words scores
    above zero. Returns ``root`` (the data directory to pass as ``data_dir``).
    """
    rng = random.Random(seed)
    words = words_of(vocab)
    folder = root / "senteval" / "STS" / "STSBenchmark"
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        rows = []
        for i in range(pairs):
            first = [rng.choice(words) for _ in range(rng.randint(6, 12))]
            k = rng.randint(0, len(first))
            second = list(first)
            for j in rng.sample(range(len(first)), k):
                second[j] = rng.choice(words)
            gold = 5.0 * (1.0 - k / len(first))
            rows.append("\t".join(["main-captions", "MSRvid", "2012test", f"{i:04d}", f"{gold:.3f}",
                                   " ".join(first), " ".join(second)]))  # fmt: skip
        (folder / f"sts-{split}.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root
