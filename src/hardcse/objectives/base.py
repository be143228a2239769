"""The contrastive frame every method plugs into.

:class:`ContrastiveLoss` is a sentence-transformers loss (``forward(sentence_features, labels)``).
It encodes each sentence twice in **one** forward pass (the batch is stacked on itself, so the
two copies get independent dropout masks, as the official SimCSE ``cl_forward``), gathers the
views across processes, and computes the unsupervised SimCSE InfoNCE (Gao et al., 2021, Eq. 4):

.. math::

    \\mathcal L = \\frac1N \\sum_i -\\log \\frac{e^{s(z_i, z'_i)/\\tau}}
        {\\sum_j e^{s(z_i, z'_j)/\\tau} + \\sum_k e^{w_{ik}} e^{e_{ik}/\\tau}}

with view-1 anchors only, cosine ``s``, temperature ``tau = 0.05``. Methods change it through
:class:`Part` objects, which see one :class:`ContrastiveBatch` in order and may

* append extra negative columns ``e`` (cosines, unscaled) with optional log-weights ``w``
  (ClusterNS centroids);
* remove in-batch columns from the denominator (false-negative masking);
* add weighted auxiliary loss terms (BML, the HSimCSE quadruplet hinge);
* record diagnostics (floats, logged in the training history).

The loss returns a dict of components (``infonce`` and one key per auxiliary term); the trainer
sums them and logs each one. Diagnostics of the last training step are in
:attr:`ContrastiveLoss.last_diagnostics`.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class ContrastiveBatch:
    """What the parts of an objective see and add to, for one (global) batch.

    ``z1``/``z2`` are the two views (N x d, with gradient), ``sim`` their unscaled cosine
    matrix ``sim[i, j] = cos(z1_i, z2_j)``, ``ids`` the corpus row of each sentence (or None).
    """

    z1: Tensor
    z2: Tensor
    sim: Tensor
    ids: Tensor | None
    step: int
    temperature: float
    training: bool = True
    extra_columns: list[Tensor] = field(default_factory=list)
    extra_log_weights: list[Tensor | None] = field(default_factory=list)
    removed: Tensor | None = None
    losses: dict[str, Tensor] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.z1.shape[0]

    def add_columns(self, cosines: Tensor, log_weights: Tensor | None = None) -> None:
        """Append negative columns: ``cosines`` is N x M (unscaled), ``log_weights`` N x M or None."""
        self.extra_columns.append(cosines)
        self.extra_log_weights.append(log_weights)

    def remove_in_batch(self, mask: Tensor) -> None:
        """Drop in-batch columns ``mask[i, j] = True`` from row i's denominator (diagonal kept)."""
        mask = mask.bool() & ~torch.eye(self.size, dtype=torch.bool, device=mask.device)
        self.removed = mask if self.removed is None else (self.removed | mask)

    def add_loss(self, name: str, value: Tensor) -> None:
        """Add a weighted auxiliary term; it is summed into the total loss and logged as ``name``."""
        self.losses[name] = self.losses[name] + value if name in self.losses else value


class Part(nn.Module):
    """One piece of an objective (a positive, negative, false-negative or auxiliary rule).

    Subclasses implement :meth:`contribute`. State that must survive a restart is kept in
    buffers, so it is in ``state_dict()`` and saved with training checkpoints.
    """

    name: str = "part"

    def contribute(self, batch: ContrastiveBatch) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def forward(self, batch: ContrastiveBatch) -> None:
        self.contribute(batch)


def pairwise_cosine(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """``cos(a_i, b_j)`` for all i, j (norms clamped at ``eps``, as torch's cosine_similarity)."""
    a_n = a / a.norm(dim=-1, keepdim=True).clamp_min(eps)
    b_n = b / b.norm(dim=-1, keepdim=True).clamp_min(eps)
    return a_n @ b_n.T


def info_nce(batch: ContrastiveBatch) -> Tensor:
    """Cross-entropy over ``[sim | extra columns] / tau`` with label i for row i (see module doc)."""
    tau = batch.temperature
    logits = batch.sim / tau
    if batch.removed is not None:
        logits = logits.masked_fill(batch.removed, float("-inf"))
    blocks = [logits]
    for cols, log_w in zip(batch.extra_columns, batch.extra_log_weights, strict=True):
        scaled = cols / tau
        blocks.append(scaled if log_w is None else scaled + log_w)
    logits = torch.cat(blocks, dim=1) if len(blocks) > 1 else logits
    labels = torch.arange(batch.size, device=logits.device)
    return F.cross_entropy(logits.float(), labels)


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
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return t
    if torch.distributed.get_world_size() == 1:
        return t
    from sentence_transformers.util import all_gather_with_grad

    return all_gather_with_grad(t)


class ContrastiveLoss(nn.Module):
    """Unsupervised contrastive loss over two dropout views, extended by :class:`Part` objects.

    Args:
        model: the SentenceTransformer being trained (its last module may be the train-only head).
        parts: the method's parts, applied in order.
        temperature: tau in the InfoNCE (0.05 in SimCSE, ClusterNS and HSimCSE).
        gather_across_devices: gather both views over processes so the loss sees the global batch.
        length_chunks: encode the two views in this many length-sorted forward passes, each padded
            to its own longest row (1: one pass, as the official code; see :meth:`encode_two_views`).

    The dataset has one text column (each sentence is tokenised once and stacked on itself for
    the two views) and optionally an integer ``label`` column holding each sentence's corpus
    row, which parts such as the corpus index use to exclude a sentence from its own neighbours.
    """

    def __init__(
        self,
        model: nn.Module,
        parts: Sequence[Part] = (),
        temperature: float = 0.05,
        gather_across_devices: bool = True,
        length_chunks: int = 1,
    ) -> None:
        super().__init__()
        self.model = model
        self.parts = nn.ModuleList(parts)
        self.temperature = temperature
        self.gather_across_devices = gather_across_devices
        self.length_chunks = max(1, int(length_chunks))
        # The optimisation step, counted on training forwards; saved with the parts' state.
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.last_diagnostics: dict[str, Any] = {}

    # -- encoding ---------------------------------------------------------------------------
    def encode_two_views(self, features: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
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
        n = features["input_ids"].shape[0]
        doubled = {k: torch.cat([v, v], dim=0) if torch.is_tensor(v) else v for k, v in features.items()}
        mask = doubled.get("attention_mask")
        if self.length_chunks == 1 or mask is None or not self._pads_right(mask):
            emb = self.model(doubled)["sentence_embedding"]
            return emb[:n], emb[n:]
        lengths = mask.sum(dim=1)
        order = torch.argsort(lengths, stable=True)
        width = mask.shape[1]
        lookup = self._word_embeddings()
        if lookup is not None and torch.is_tensor(doubled.get("input_ids")) and "inputs_embeds" not in doubled:
            ids = doubled.pop("input_ids")
            doubled["inputs_embeds"] = lookup(ids)
        pieces = []
        sizes = padding_optimal_split(lengths[order].tolist(), self.length_chunks)
        for rows in torch.split(order, sizes):
            cut = int(lengths[rows].max())
            chunk = {}
            for key, value in doubled.items():
                if torch.is_tensor(value) and value.dim() >= 1 and value.shape[0] == 2 * n:
                    value = value[rows]
                    if value.dim() in (2, 3) and value.shape[1] == width:  # token ids / inputs_embeds
                        value = value[:, :cut]
                chunk[key] = value
            pieces.append(self.model(chunk)["sentence_embedding"])
        emb = torch.cat(pieces)[torch.argsort(order)]
        return emb[:n], emb[n:]

    def _word_embeddings(self) -> nn.Module | None:
        """The encoder's input embedding module if its forward takes ``inputs_embeds``, else ``None``."""
        if "_lookup" not in self.__dict__:
            # Kept outside nn.Module's registry: the loss must not own (or save) the encoder's weights.
            lookup = None
            first = self.model[0] if isinstance(self.model, nn.Sequential) and len(self.model) else None
            encoder = getattr(first, "model", None) or getattr(first, "auto_model", None)
            params = getattr(first, "model_forward_params", None)
            get = getattr(encoder, "get_input_embeddings", None)
            if isinstance(encoder, nn.Module) and callable(get):
                embedding = get()
                takes = "inputs_embeds" in inspect.signature(encoder.forward).parameters
                if isinstance(embedding, nn.Embedding) and takes and (params is None or "inputs_embeds" in params):
                    lookup = embedding
            object.__setattr__(self, "_lookup", lookup)
        return self.__dict__["_lookup"]

    @staticmethod
    def _pads_right(mask: Tensor) -> bool:
        # Right padding: no row has a real token after a pad (left-padded batches are not cut).
        return bool((mask[:, 1:] <= mask[:, :-1]).all())

    # -- loss -------------------------------------------------------------------------------
    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None):
        features = list(sentence_features)
        if len(features) == 1:
            z1, z2 = self.encode_two_views(features[0])
        else:
            # Two text columns (e.g. (s, s) pairs as in sentence-transformers' SimCSE recipe).
            z1 = self.model(features[0])["sentence_embedding"]
            z2 = self.model(features[1])["sentence_embedding"]
        ids = labels.long() if labels is not None and labels.numel() == z1.shape[0] else None
        if self.gather_across_devices:
            z1, z2 = gather(z1), gather(z2)
            if ids is not None:
                from sentence_transformers.util import all_gather

                ids = all_gather(ids) if torch.distributed.is_initialized() else ids
        return self.compute_loss_from_embeddings(z1, z2, ids)

    def compute_loss_from_embeddings(self, z1: Tensor, z2: Tensor, ids: Tensor | None = None) -> dict:
        """The loss components for views ``z1``/``z2`` (N x d) of the global batch.

        Always in fp32, also under bf16/fp16 autocast (the encoder's mixed precision stops here):
        bf16 keeps about 3 significant digits, and an error of 0.004 in a cosine is 0.08 in a
        logit at tau = 0.05.
        """
        z1, z2 = z1.float(), z2.float()
        with torch.autocast(device_type=z1.device.type, enabled=False):
            batch = ContrastiveBatch(
                z1=z1,
                z2=z2,
                sim=pairwise_cosine(z1, z2),
                ids=ids,
                step=int(self.step),
                temperature=self.temperature,
                training=self.training,
            )
            for part in self.parts:
                part(batch)
            losses = {"infonce": info_nce(batch)}
            losses.update(batch.losses)
        if self.training:
            self.step += 1
            self.last_diagnostics = batch.diagnostics
        return losses

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "parts": [p.name for p in self.parts],
            "gather_across_devices": self.gather_across_devices,
        }

    @property
    def citation(self) -> str:
        return (
            "@inproceedings{gao2021simcse, title={SimCSE: Simple Contrastive Learning of Sentence "
            "Embeddings}, author={Gao, Tianyu and Yao, Xingcheng and Chen, Danqi}, booktitle={EMNLP}, year={2021}}"
        )
