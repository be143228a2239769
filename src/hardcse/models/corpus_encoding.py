"""Encoding a training corpus into an embedding bank (the vectors HSimCSE's faiss index searches).

:func:`encode_corpus` encodes the corpus in batches (length-sorted, tqdm progress bar) and returns
L2-normalised float32 vectors, in one of two spaces:

- ``official``: the model in eval mode (no dropout) **without** the train-only MLP head, i.e. the
  raw pooled ``[CLS]`` of the backbone, L2-normalised. Called on the untrained model before
  training this is exactly the official bank.
- ``refresh``: the model in eval mode (no dropout) **with** the train-only head applied, i.e. the
  space the training queries live in. :func:`head_applied` runs
  :class:`~hardcse.models.head.TrainOnlyHead` although the model is in eval mode.

Under ``torch.distributed`` each process encodes a contiguous shard of the corpus and the shards
are all-gathered, so every process holds the same full bank; single process = the whole corpus.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hardcse.errors import ConfigError
from hardcse.numeric import normalize_rows
from hardcse.process_group import rank_and_size

ENCODE_MODES = ("official", "refresh")


# -- encoding --------------------------------------------------------------------------------
@contextlib.contextmanager
def head_applied(model: torch.nn.Module, apply_head: bool) -> Iterator[torch.nn.Module]:
    """Put ``model`` in eval mode (no dropout) with the train-only head on or off; restore after.

    :class:`~hardcse.models.head.TrainOnlyHead` is the identity in eval mode (so evaluation sees
    the raw ``[CLS]``). To encode in the training space without dropout, the head module alone
    is switched to train mode: it is Linear + tanh with no dropout, so that only turns it on.
    Every module's previous ``training`` flag is restored on exit.
    """
    from hardcse.models.head import TrainOnlyHead

    flags = {m: m.training for m in model.modules()}
    try:
        model.eval()
        for module in model.modules():
            if isinstance(module, TrainOnlyHead):
                module.train(apply_head)
        yield model
    finally:
        for module, flag in flags.items():
            module.training = flag


def _shard(n: int, rank: int, world: int) -> tuple[int, int, int]:
    """Contiguous shard ``[start, stop)`` of ``n`` rows for ``rank`` and the padded shard size."""
    per = math.ceil(n / world) if n else 0
    start = min(rank * per, n)
    return start, min(start + per, n), per


def _encode_local(
    model: Any, sentences: Sequence[str], batch_size: int, apply_head: bool, show_progress: bool
) -> Tensor:
    """Encode ``sentences`` (no gradient, eval mode) -> float32 L2-normalised tensor on CPU."""
    from tqdm.auto import tqdm

    if not sentences:
        dim = model.get_embedding_dimension()
        return torch.zeros(0, dim, dtype=torch.float32)
    device = next(model.parameters()).device
    # Length-sorted batches (as SentenceTransformer.encode) pad less; deterministic order.
    order = np.argsort([-len(s) for s in sentences], kind="stable")
    out: Tensor | None = None
    n_batches = math.ceil(len(sentences) / batch_size)
    with head_applied(model, apply_head), torch.no_grad():
        for b in tqdm(range(n_batches), desc="Encoding corpus", disable=not show_progress, leave=False):
            rows = order[b * batch_size : (b + 1) * batch_size]
            features = model.preprocess([sentences[i] for i in rows])
            features = {k: v.to(device) if torch.is_tensor(v) else v for k, v in features.items()}
            emb = model(features)["sentence_embedding"].float()
            emb = normalize_rows(emb, eps=1e-12)  # torch.nn.functional.normalize's eps
            if out is None:
                out = torch.empty(len(sentences), emb.shape[1], dtype=torch.float32)
            out[torch.from_numpy(rows)] = emb.cpu()
    assert out is not None
    return out


def encode_corpus(
    model: Any,
    sentences: Sequence[str],
    batch_size: int = 128,
    mode: str = "official",
    show_progress: bool = True,
) -> np.ndarray:
    """The corpus bank: ``sentences`` encoded in ``mode`` space, L2-normalised float32 (n x d).

    ``mode="official"``: eval mode, no MLP head (raw pooled ``[CLS]``), as the official bank
    when called on the untrained model. ``mode="refresh"``: eval mode with the
    train-only head applied (the queries' space, without dropout). Every module's train/eval
    flag is restored afterwards.

    If ``torch.distributed`` is initialised with several processes, process ``r`` encodes rows
    ``[r*ceil(n/W), (r+1)*ceil(n/W))`` and the shards are all-gathered (every process calls this
    and every process returns the same full bank); otherwise the whole corpus is encoded here.
    """
    if mode not in ENCODE_MODES:
        raise ConfigError(f"unknown index encoding mode '{mode}'; choose one of {', '.join(ENCODE_MODES)}.")
    if batch_size < 1:
        raise ConfigError(f"the corpus encoding batch size must be at least 1, got {batch_size}.")
    apply_head = mode == "refresh"
    rank, world = rank_and_size()
    n = len(sentences)
    if world == 1:
        return _encode_local(model, sentences, batch_size, apply_head, show_progress).numpy()
    start, stop, per = _shard(n, rank, world)
    local = _encode_local(model, sentences[start:stop], batch_size, apply_head, show_progress and rank == 0)
    dim = model.get_embedding_dimension()
    # NCCL gathers CUDA tensors only; gloo (CPU) gathers CPU tensors.
    backend = torch.distributed.get_backend()
    device = next(model.parameters()).device if backend == "nccl" else torch.device("cpu")
    padded = torch.zeros(per, dim, dtype=torch.float32, device=device)
    padded[: stop - start] = local.to(device)
    shards = [torch.empty_like(padded) for _ in range(world)]
    torch.distributed.all_gather(shards, padded)
    parts = []
    for r, shard in enumerate(shards):
        s0, s1, _ = _shard(n, r, world)
        parts.append(shard[: s1 - s0].cpu())
    return torch.cat(parts, dim=0).numpy()
