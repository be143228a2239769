"""The encoding strategy of the contrastive objective: how a step's sentences become two views.

:class:`TwoViewEncoder` turns a batch of tokenised sentences into the views ``z1``, ``z2``
(N x d) that the objective (:class:`~hardcse.objectives.base.HardCSELoss`) reads, and the corpus
row of each sentence:

* **two views**: the batch is stacked on itself and encoded in **one** forward pass, so the two
  copies get independent dropout masks (as the official SimCSE ``cl_forward``); or, when the
  encoder's first module builds its own views (``two_views``: the prompt encoder wraps view 1 and
  view 2 in different templates, :mod:`hardcse.models.prompt`), those 2N rows; or, for a dataset
  with two text columns, each column;
* **length chunks**: the 2N rows in ``length_chunks`` length-sorted, padding-optimal passes that
  share one word-embedding lookup (:meth:`TwoViewEncoder.encode_rows`);
* **gathering** the views and ids across processes, so the objective sees the global batch.

A cached step (:class:`~hardcse.objectives.cached.CachedStep`) encodes through the same object,
mini-batch by mini-batch. The strategy holds settings only: the encoder is passed to every call,
because sentence-transformers' trainer puts its DDP-wrapped model into the loss's ``model``
attribute at the first step, and the strategy must encode with the model the loss holds then.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from hardcse import process_group


def padding_optimal_split(lengths: Sequence[int], chunks: int) -> list[int]:
    """Sizes of at most ``chunks`` consecutive pieces of the ascending ``lengths`` that minimise
    the padded work ``sum over pieces of (rows x longest row)`` (dynamic programming, O(C n^2)).

    Example: lengths 1, 1, 1, 10 in two pieces -> [3, 1] (3 x 1 + 1 x 10 = 13 tokens; equal
    halves would cost 2 x 1 + 2 x 10 = 22).
    """
    length = np.asarray(lengths, dtype=np.int64)
    n = len(length)
    if n == 0:
        return []
    idx = np.arange(n + 1)
    # cost[i, j]: rows i..j-1 as one piece (its longest row is the last, lengths ascending).
    longest = np.concatenate([[0], length])
    cost = (idx[None, :] - idx[:, None]) * longest[None, :]
    cost = np.where(idx[:, None] <= idx[None, :], cost, np.iinfo(np.int64).max // 4)
    best = np.where(idx == 0, 0, np.iinfo(np.int64).max // 4)  # best[j]: rows 0..j-1 in the pieces so far
    starts = []
    for _ in range(max(1, chunks)):
        total = best[:, None] + cost  # an empty piece (i == j) costs nothing: "at most C" pieces
        starts.append(total.argmin(axis=0))
        best = total.min(axis=0)
    sizes, j = [], n
    for start in reversed(starts):
        i = int(start[j])
        if j > i:
            sizes.append(j - i)
        j = i
    return sizes[::-1]


def gather(t: Tensor) -> Tensor:
    """All-gather ``t`` across processes, with gradient (the global batch, in rank order).

    Why the gradient is right under DDP: every process computes the same loss ``L`` of the
    global batch; the backward of ``torch.distributed.nn.all_gather`` sums over processes the
    gradient each one sends to a shard, so a process's own shard receives ``W * dL/dz``, and
    DDP's average over the ``W`` processes gives exactly the single-process gradient of the
    global batch (``tests/test_distributed.py``: 2 x 16 sentences match 1 x 32 step by step).
    """
    if process_group.world_size() == 1:
        return t
    from sentence_transformers.util import all_gather_with_grad

    return all_gather_with_grad(t)


def gather_no_grad(t: Tensor) -> Tensor:
    """All-gather ``t`` (equal shapes on every process) without gradient, in rank order."""
    rank, size = process_group.rank_and_size()
    if size == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(size)]
    torch.distributed.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=0)


def num_rows(features: dict[str, Tensor]) -> int:
    """The number of rows (sentences or encoder rows) of tokenised ``features``."""
    for key in ("input_ids", "attention_mask", "inputs_embeds"):
        if torch.is_tensor(features.get(key)):
            return features[key].shape[0]
    return next(v.shape[0] for v in features.values() if torch.is_tensor(v) and v.dim() >= 1)


def pads_right(mask: Tensor) -> bool:
    """Right padding: no row of ``mask`` has a real token after a pad (left-padded batches are not cut)."""
    return bool((mask[:, 1:] <= mask[:, :-1]).all())


def _doubled(features: dict[str, Tensor]) -> dict[str, Tensor]:
    """The batch stacked on itself (rows i and n + i: the two dropout views of sentence i)."""
    return {k: torch.cat([v, v], dim=0) if torch.is_tensor(v) else v for k, v in features.items()}


def select_rows(features: dict[str, Tensor], rows: Tensor, total: int, cut: bool) -> dict[str, Tensor]:
    """Rows ``rows`` of every per-row tensor; with ``cut`` (right padding) token tensors end at the
    longest selected row."""
    mask = features.get("attention_mask")
    width = mask.shape[1] if mask is not None else None
    length = int(mask[rows].sum(dim=1).max()) if cut and len(rows) else None
    out = {}
    for key, value in features.items():
        if torch.is_tensor(value) and value.dim() >= 1 and value.shape[0] == total:
            value = value[rows]
            if length is not None and value.dim() in (2, 3) and value.shape[1] == width:
                value = value[:, :length]
        out[key] = value
    return out


def _first_module(model: nn.Module) -> nn.Module | None:
    return model[0] if isinstance(model, nn.Sequential) and len(model) else None


class TwoViewEncoder:
    """The two views of a batch, encoded: SimCSE's one-pass encoding, optionally in length chunks.

    Args:
        length_chunks: encode the views' rows in this many length-sorted forward passes, each
            padded to its own longest row (1: one pass, as the official code; see
            :meth:`encode_rows`).
        gather_across_devices: gather both views (and the ids) over processes so the objective
            sees the global batch.

    The dataset has one text column (each sentence is tokenised once and stacked on itself for
    the two views) or two (e.g. ``(s, s)`` pairs as in sentence-transformers' SimCSE recipe), and
    optionally an integer ``label`` column holding each sentence's corpus row, which parts such as
    the corpus index use to exclude a sentence from its own neighbours.
    """

    def __init__(self, length_chunks: int = 1, gather_across_devices: bool = True) -> None:
        self.length_chunks = max(1, int(length_chunks))
        self.gather_across_devices = gather_across_devices
        # (model, its word embeddings or None): looked up once per model (:meth:`word_embeddings`).
        self._lookup: tuple[nn.Module, nn.Module | None] | None = None

    # -- the rows ---------------------------------------------------------------------------
    def rows(self, model: nn.Module, features: dict[str, Tensor]) -> dict[str, Tensor]:
        """The 2N encoder rows of a batch: the batch stacked on itself, or, when the encoder's first
        module builds its own views (``two_views``: the prompt encoder wraps view 1 and view 2 in
        different templates, :mod:`hardcse.models.prompt`), those rows."""
        views = getattr(_first_module(model), "two_views", None)
        return views(features) if callable(views) else _doubled(features)

    def sources(self, model: nn.Module, features: Sequence[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
        """The encoder inputs of a step, stacked in this order they hold view 1's rows, then view 2's:
        the 2N rows of one text column (:meth:`rows`), or the two text columns."""
        return [self.rows(model, features[0])] if len(features) == 1 else list(features[:2])

    @staticmethod
    def ids(labels: Tensor | None, n: int) -> Tensor | None:
        """Each sentence's corpus row: the ``label`` column when it has one entry per sentence."""
        return labels.long() if labels is not None and labels.numel() == n else None

    # -- encoding ---------------------------------------------------------------------------
    def encode(
        self, model: nn.Module, features: Sequence[dict[str, Tensor]], labels: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """The views ``z1``, ``z2`` of the global batch, with gradient, and their corpus rows.

        One text column: :meth:`encode_two_views`. Two text columns: each column in one pass.
        Then gathered over processes (:meth:`gather`).
        """
        features = list(features)
        if len(features) == 1:
            z1, z2 = self.encode_two_views(model, features[0])
        else:
            # Two text columns (e.g. (s, s) pairs as in sentence-transformers' SimCSE recipe).
            z1 = model(features[0])["sentence_embedding"]
            z2 = model(features[1])["sentence_embedding"]
        return self.gather(z1, z2, self.ids(labels, z1.shape[0]))

    def encode_two_views(self, model: nn.Module, features: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The batch stacked on itself, encoded; returns (view 1, view 2).

        With ``length_chunks = C > 1`` the 2N rows are sorted by length and encoded in at most C
        forward passes, each padded only to its own longest row, with the cuts placed where they
        save the most padding (:func:`padding_optimal_split`): the same sentences share the
        loss's batch, but less padding is computed (on the default corpus at max length 32,
        padded tokens per real token fall from 1.26 to 1.05 with C = 4; 1.09 with equal-sized
        chunks). Needs right padding.

        The word embeddings of all 2N rows are looked up once and each pass gets its slice as
        ``inputs_embeds`` (when the encoder takes them): the backward of a lookup builds a dense
        vocabulary x dim gradient (30,522 x 384 for BERT) and adds it to the weight's, so one
        lookup instead of C saves C - 1 of those (~10% of a 4-chunk CPU step, torch profiler).
        Position and token-type embeddings are still added inside each pass; for right-padded
        BERT/RoBERTa-style encoders the forward is the same computation (tested) and the
        gradients differ only by float summation order.
        """
        n = num_rows(features)
        emb = self.encode_rows(model, self.rows(model, features))
        return emb[:n], emb[n:]

    def encode_rows(self, model: nn.Module, features: dict[str, Tensor], rows: Tensor | None = None) -> Tensor:
        """Embeddings of the rows ``rows`` of the tokenised ``features`` (all rows if ``None``), in
        that order, in ``length_chunks`` padding-optimal passes (:meth:`encode_two_views`).

        A subset of a right-padded input is cut to its own longest row first (the cut columns are
        padding of every selected row). ``features`` is not modified.
        """
        features = dict(features)
        mask = features.get("attention_mask")
        if rows is not None:
            cut = mask is not None and pads_right(mask)
            features = select_rows(features, rows, num_rows(features), cut=cut)
            mask = features.get("attention_mask")
        if self.length_chunks == 1 or mask is None or not pads_right(mask):
            return model(features)["sentence_embedding"]
        doubled, total = features, mask.shape[0]
        lengths = mask.sum(dim=1)
        order = torch.argsort(lengths, stable=True)
        width = mask.shape[1]
        lookup = self.word_embeddings(model)
        if lookup is not None and torch.is_tensor(doubled.get("input_ids")) and "inputs_embeds" not in doubled:
            ids = doubled.pop("input_ids")
            doubled["inputs_embeds"] = lookup(ids)
        pieces = []
        sizes = padding_optimal_split(lengths[order].tolist(), self.length_chunks)
        for piece in torch.split(order, sizes):
            cut = int(lengths[piece].max())
            chunk = {}
            for key, value in doubled.items():
                if torch.is_tensor(value) and value.dim() >= 1 and value.shape[0] == total:
                    value = value[piece]
                    if value.dim() in (2, 3) and value.shape[1] == width:  # token ids / inputs_embeds
                        value = value[:, :cut]
                chunk[key] = value
            pieces.append(model(chunk)["sentence_embedding"])
        return torch.cat(pieces)[torch.argsort(order)]

    def word_embeddings(self, model: nn.Module) -> nn.Module | None:
        """The encoder's input embedding module if its forward takes ``inputs_embeds``, else ``None``.

        Found once per model and kept here, outside any module's registry: the strategy must not
        own (or save) the encoder's weights.
        """
        if self._lookup is None or self._lookup[0] is not model:
            lookup = None
            first = _first_module(model)
            encoder = getattr(first, "model", None)  # sentence-transformers >= 6: Transformer.model
            params = getattr(first, "model_forward_params", None)
            get = getattr(encoder, "get_input_embeddings", None)
            if isinstance(encoder, nn.Module) and callable(get):
                embedding = get()
                takes = "inputs_embeds" in inspect.signature(encoder.forward).parameters
                if isinstance(embedding, nn.Embedding) and takes and (params is None or "inputs_embeds" in params):
                    lookup = embedding
            self._lookup = (model, lookup)
        return self._lookup[1]

    # -- across processes -------------------------------------------------------------------
    def rank_and_size(self) -> tuple[int, int]:
        """This process's rank and the number of processes the views are gathered over ((0, 1) when
        ``gather_across_devices`` is off)."""
        return process_group.rank_and_size() if self.gather_across_devices else (0, 1)

    def gather(self, z1: Tensor, z2: Tensor, ids: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """Both views over processes with gradient (:func:`gather`), and the ids (no gradient)."""
        if self.gather_across_devices:
            z1, z2 = gather(z1), gather(z2)
            if ids is not None:
                from sentence_transformers.util import all_gather

                ids = all_gather(ids) if process_group.is_initialized() else ids
        return z1, z2, ids

    def gather_no_grad(self, z1: Tensor, z2: Tensor, ids: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """Both views and the ids over processes without gradient (:func:`gather_no_grad`; a cached
        step's embeddings are detached)."""
        if self.rank_and_size()[1] > 1:
            z1, z2 = gather_no_grad(z1), gather_no_grad(z2)
            ids = gather_no_grad(ids) if ids is not None else None
        return z1, z2, ids

    def get_config_dict(self) -> dict[str, Any]:
        """The encoding settings."""
        return {"length_chunks": self.length_chunks, "gather_across_devices": self.gather_across_devices}
