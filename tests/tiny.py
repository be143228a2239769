"""A tiny random BERT written to disk, for fast tests that run real training code."""

from __future__ import annotations

from pathlib import Path

WORDS = (
    "the a an of in on and to is was were be by for with as at from that this it he she they his her "
    "city river music film war king state church school team game river art science water house year "
    "people world first new old large small red blue green black white one two three man woman dog cat "
    "plays runs sits eats walks sings reads writes is are . , ' - ( )"
).split()


def make_tiny_bert(path: Path, hidden: int = 32, layers: int = 2, dropout: float = 0.1) -> Path:
    """Save a 2-layer, 32-dim random BERT and a WordPiece tokenizer under ``path``."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(WORDS)]
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab = list(dict.fromkeys(vocab))
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # transformers 5 ignores vocab_file= here (only the special tokens survive): pass the vocabulary.
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    tokenizer.save_pretrained(str(path))
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=128,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(path))
    return path


def make_tiny_training_model(path: Path):
    """The tiny BERT as a training model (CLS + train-only head), seeded, in train mode."""
    import torch

    from hardcse.models.encoder import build_training_model

    make_tiny_bert(path)
    torch.manual_seed(1)
    model = build_training_model(str(path), pooling="cls", max_seq_length=32, mlp_head=True)
    model.train()
    return model
