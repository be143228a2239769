"""Helpers shared by the tests: the tiny random BERT, a corpus, the in-process CLI, hand-made STS data.

Import them from here (``from helpers import make_tiny_bert, run_cli``); test modules do not
import each other.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fake_sts import sentence, write_all, write_sick, write_sts_year, write_stsb

__all__ = [
    "WORDS",
    "assert_one_sentence_error",
    "make_tiny_bert",
    "make_tiny_training_model",
    "run_cli",
    "sentence",
    "snapshot",
    "write_all",
    "write_corpus",
    "write_sick",
    "write_sts_year",
    "write_stsb",
]

WORDS = (
    "the a an of in on and to is was were be by for with as at from that this it he she they his her "
    "city river music film war king state church school team game river art science water house year "
    "people world first new old large small red blue green black white one two three man woman dog cat "
    "plays runs sits eats walks sings reads writes is are . , ' - ( )"
).split()


# --------------------------------------------------------------------------------------------
# Models


def make_tiny_bert(path: Path, hidden: int = 32, layers: int = 2, dropout: float = 0.1) -> Path:
    """Save a 2-layer, 32-dim random BERT (seed 0) and a WordPiece tokenizer that knows ``WORDS``.

    transformers 5 ignores ``vocab_file=`` for ``BertTokenizerFast`` (only the special tokens
    would survive and every word would become [UNK]), so the vocabulary is passed as a dict;
    distinct words give distinct embeddings and defined STS scores. ``dropout=0.0`` gives a
    deterministic encoder (the conversion and MTEB tests use it).
    """
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(WORDS)]
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab = list(dict.fromkeys(vocab))
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    assert "[UNK]" not in tokenizer.tokenize("the dog plays")
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
    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(path))
    return path


def make_tiny_training_model(path: Path):
    """The tiny BERT as a training model (CLS + train-only head), seeded, in train mode."""
    import torch

    from hardcse.models.representation import Pooled

    make_tiny_bert(path)
    torch.manual_seed(1)
    model = Pooled("cls").build(str(path), max_seq_length=32, mlp_head=True)
    model.train()
    return model


# --------------------------------------------------------------------------------------------
# Data


def byte_level_vocab() -> dict[str, int]:
    """RoBERTa's special tokens plus the 256 byte-level symbols, for a byte-level BPE tokenizer
    without merges (one token per byte)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
    extra = 0
    for b in range(256):
        if b in printable:
            char = chr(b)
        else:
            char, extra = chr(256 + extra), extra + 1
        vocab.setdefault(char, len(vocab))
    return vocab


def close_process_group() -> None:
    """End a test worker's gloo group: wait for every rank, then destroy it. Without the barrier a
    rank that exits while another still tears its connections down can abort that one at exit
    ("terminate called without an active exception", seen in CI about 1 run in 3)."""
    import torch

    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def write_corpus(path: Path, lines: int = 160) -> Path:
    """``lines`` deterministic short sentences (4-9 words of the first 60 ``WORDS``), one a line."""
    import torch

    rng = torch.Generator().manual_seed(0)
    words = WORDS[:60]
    out = []
    for _ in range(lines):
        n = int(torch.randint(4, 10, (1,), generator=rng))
        out.append(" ".join(words[i] for i in torch.randint(0, len(words), (n,), generator=rng).tolist()))
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes), to check a directory was left as it was."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------
# The command line


def run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """Run the ``hardcse`` entry point in-process; return (exit code, stdout, stderr)."""
    from hardcse.cli import main

    monkeypatch.setattr(sys, "argv", ["hardcse", *args])
    code = 0
    try:
        main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_sentence_error(code: int, err: str, *fragments: str) -> None:
    """A failed command: non-zero exit, exactly one ``error: ...`` line holding every fragment, no traceback."""
    assert code != 0
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def tiny_train_args(inputs: dict[str, Path], out: Path, *extra: str, corpus: Path | None = None) -> list[str]:
    """``hardcse train`` arguments for a 2-step run of the tiny BERT (``inputs``: bert, corpus, data)."""
    return [
        "train",
        "--quiet",
        "--model",
        str(inputs["bert"]),
        "--corpus",
        str(corpus or inputs["corpus"]),
        "--data-dir",
        str(inputs["data"]),
        "--steps",
        "2",
        "--eval-steps",
        "2",
        "--batch-size",
        "8",
        "--tasks",
        "STS-B",
        "--output",
        str(out),
        *extra,
    ]
