"""The domain-adaptation baselines a user would pick instead of hardcse's methods, trained with
sentence-transformers' own losses (not re-implemented) inside hardcse's run, so they get the same
corpus, dev selection, test sets and report (config key ``st_loss``).

* ``tsdae``: :class:`sentence_transformers.losses.DenoisingAutoEncoderLoss` (Wang et al., 2021,
  "TSDAE: Using Transformer-based Sequential Denoising Auto-Encoder for Unsupervised Sentence
  Embedding Learning"): the encoder embeds a damaged sentence (about 60% of its words deleted) and
  a decoder tied to the encoder's weights reconstructs the original from that one vector.
  sentence-transformers' documented set-up: CLS pooling, decoder tied to the encoder, deletion
  ratio 0.6, lr 3e-5 constant, batch 8 (``benchmarks/configs/tsdae.yaml``). Deviation: the
  words are split on whitespace and re-joined with spaces (the documented example tokenises with
  NLTK's word tokenizer, whose model data cannot be assumed to be installed); the deletion is the
  same, seeded by the run's seed.
* ``ct``: :class:`sentence_transformers.losses.ContrastiveTensionLossInBatchNegatives` (Carlsson
  et al., 2021, "Semantic Re-tuning with Contrastive Tension"): a frozen-at-start copy of the
  encoder and the encoder itself embed the same sentence; the two embeddings of a sentence are
  the positive, the rest of the batch the negatives, scale 20 (the loss's defaults; lr 5e-5, batch
  32 as in its documentation: ``benchmarks/configs/ct.yaml``). The encoder (not the copy) is the
  model kept.
"""

from __future__ import annotations

import random
from typing import Any

from datasets import Dataset
from sentence_transformers import SentenceTransformer

from hardcse.errors import ConfigError

#: The sentence-transformers losses that ``st_loss`` can name.
ST_LOSSES: tuple[str, ...] = ("tsdae", "ct")
#: Fraction of words TSDAE deletes from the input sentence (its paper's and documentation's 0.6).
TSDAE_DELETION = 0.6


def check_st_loss(name: str | None) -> None:
    if name is not None and name not in ST_LOSSES:
        raise ConfigError(f"unknown st_loss '{name}'; choose one of {', '.join(ST_LOSSES)} (or leave it unset).")


def delete_words(sentence: str, rng: random.Random, ratio: float = TSDAE_DELETION) -> str:
    """TSDAE's noise: each whitespace word is deleted with probability ``ratio``; at least one stays."""
    words = sentence.split()
    if not words:
        return sentence
    kept = [w for w in words if rng.random() >= ratio]
    return " ".join(kept) if kept else rng.choice(words)


def build_st_objective(name: str, model: SentenceTransformer, sentences: list[str], seed: int) -> tuple[Any, Dataset]:
    """The sentence-transformers loss ``name`` on ``model`` and its training dataset."""
    check_st_loss(name)
    if name == "tsdae":
        from sentence_transformers.sentence_transformer.losses import DenoisingAutoEncoderLoss

        rng = random.Random(seed)
        # The damaged input first (the encoder's), the original second (the decoder's target).
        dataset = Dataset.from_dict({"noisy": [delete_words(s, rng) for s in sentences], "text": sentences})
        return DenoisingAutoEncoderLoss(model, tie_encoder_decoder=True), dataset
    from sentence_transformers.sentence_transformer.losses import ContrastiveTensionLossInBatchNegatives

    return ContrastiveTensionLossInBatchNegatives(model), Dataset.from_dict({"text": sentences})
