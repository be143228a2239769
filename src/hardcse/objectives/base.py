"""The contrastive frame every method plugs into.

:class:`HardCSELoss` is a sentence-transformers loss (``forward(sentence_features, labels)``).
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
:attr:`HardCSELoss.last_diagnostics`.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hardcse import process_group
from hardcse.errors import ConfigError
from hardcse.numeric import pairwise_cosine
from hardcse.objectives.cached import CachedStep
from hardcse.objectives.heads import SIMCSE_CITATION, ContrastiveHead, InfoNCE


@dataclass
class ContrastiveBatch:
    """What the parts of an objective see and add to, for one (global) batch.

    ``z1``/``z2`` are the two views (N x d, with gradient), ``sim`` their unscaled cosine
    matrix ``sim[i, j] = cos(z1_i, z2_j)``, ``ids`` the corpus row of each sentence (or None).

    Parts hand results to each other through named slots, filled by an earlier stage
    (:data:`STAGES`) and read by a later one:

    * ``positives`` (stage ``positive``): per-row positives by name, e.g. ``"adversarial"``
      (HSimCSE's adversarial positive); :meth:`add_positive`, :meth:`positive_cos`;
    * ``hard_negatives`` (stage ``negative``): per-row hard negatives by name, e.g.
      ``"in_batch_hardest"`` (the hardest in-batch cosine) or ``"corpus"`` (the mean of a row's
      corpus neighbours); :meth:`add_hard_negative`, :meth:`hard_negative_cos`;
    * ``false_negatives`` (stage ``negative``): an N x N mask of pairs a miner believes are not
      negatives (ClusterNS: same cluster), consumed by the ``false_negative`` handlers (mask them,
      penalise them with BML, or ignore them); :meth:`mark_false_negatives`.

    A per-row value is either N cosines to the anchor ``z_i`` or an N x d embedding, whose cosine
    to ``z_i`` the ``*_cos`` accessors take. Negative columns of the contrastive logits
    (:meth:`add_columns`, :meth:`remove_in_batch`), auxiliary losses (:meth:`add_loss`) and
    diagnostics are what parts add for the head and the trainer.
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
    positives: dict[str, Tensor] = field(default_factory=dict)
    hard_negatives: dict[str, Tensor] = field(default_factory=dict)
    false_negatives: Tensor | None = None

    @property
    def size(self) -> int:
        return self.z1.shape[0]

    def add_positive(self, name: str, value: Tensor) -> None:
        """Publish a per-row positive ``name``: N cosines to ``z_i`` or an N x d embedding."""
        self._publish(self.positives, "positive", name, value)

    def positive_cos(self, name: str) -> Tensor:
        """The cosine (fp32, N) of each anchor ``z_i`` to its positive ``name``."""
        return self._row_cosines(self.positives, "positive", name)

    def add_hard_negative(self, name: str, value: Tensor) -> None:
        """Publish a per-row hard negative ``name``: N cosines to ``z_i`` or an N x d embedding."""
        self._publish(self.hard_negatives, "hard negative", name, value)

    def hard_negative_cos(self, name: str) -> Tensor:
        """The cosine (fp32, N) of each anchor ``z_i`` to its hard negative ``name``."""
        return self._row_cosines(self.hard_negatives, "hard negative", name)

    def mark_false_negatives(self, mask: Tensor) -> None:
        """Mark in-batch pairs ``mask[i, j] = True`` as false negatives (diagonal dropped; marks of
        several miners are joined). Only handlers act on them: :meth:`remove_in_batch`, a penalty."""
        mask = mask.bool() & ~torch.eye(self.size, dtype=torch.bool, device=mask.device)
        self.false_negatives = mask if self.false_negatives is None else (self.false_negatives | mask)

    def _publish(self, slot: dict[str, Tensor], kind: str, name: str, value: Tensor) -> None:
        if name in slot:
            raise ConfigError(f"two parts of the recipe publish the {kind} '{name}'; a recipe has one of each name.")
        if value.shape[0] != self.size or value.dim() not in (1, 2):
            raise ValueError(
                f"the {kind} '{name}' has shape {tuple(value.shape)}; expected ({self.size},) or ({self.size}, d)."
            )
        slot[name] = value

    def _row_cosines(self, slot: dict[str, Tensor], kind: str, name: str) -> Tensor:
        if name not in slot:
            published = ", ".join(sorted(slot)) or "none"
            raise ConfigError(
                f"no part of the recipe publishes the {kind} '{name}' (published: {published}); "
                "add the part that produces it to the recipe."
            )
        value = slot[name]
        if value.dim() == 1:
            return value.float()
        return F.cosine_similarity(self.z1.float(), value.float(), dim=-1, eps=1e-8)

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

    def logits(self) -> Tensor:
        """The contrastive logits, fp32, ``N x (N + M)``: ``[sim | extra columns] / tau``, each extra
        block plus its log-weights, removed in-batch entries ``-inf``. Row ``i`` is anchor ``z_i``,
        column ``i`` its positive; every other column a negative. What the head reads."""
        tau = self.temperature
        logits = self.sim / tau
        if self.removed is not None:
            logits = logits.masked_fill(self.removed, float("-inf"))
        blocks = [logits]
        for cols, log_w in zip(self.extra_columns, self.extra_log_weights, strict=True):
            scaled = cols / tau
            blocks.append(scaled if log_w is None else scaled + log_w)
        logits = torch.cat(blocks, dim=1) if len(blocks) > 1 else logits
        return logits.float()

    def labels(self) -> Tensor:
        """The positive's column of each row of :meth:`logits` (``i`` for row ``i``)."""
        return torch.arange(self.size, device=self.sim.device)


#: The stages a step runs its parts in, in this order; within a stage, in recipe order. A part's
#: ``stage`` says what it needs to have been done before it: ``positive`` (builds positives),
#: ``negative`` (appends negative columns, e.g. centroids or corpus neighbours), ``false_negative``
#: (removes in-batch columns or penalises them), ``term`` (auxiliary losses and diagnostics that may
#: read every column). The head runs after all of them, so a recipe's loss does not depend on the
#: order its methods are named in.
STAGES: tuple[str, ...] = ("positive", "negative", "false_negative", "term")


class Part(nn.Module):
    """One piece of an objective (a positive, negative, false-negative or auxiliary rule).

    Subclasses implement :meth:`contribute` and set ``stage`` (one of :data:`STAGES`; default
    ``term``). State that must survive a restart is kept in buffers, so it is in ``state_dict()``
    and saved with training checkpoints.

    Attributes:
        name: a short name (the method's, for a method's part).
        stage: when in a step it runs (:data:`STAGES`).
        title: the method's name as papers write it, for model cards ("" if none).
        citation: BibTeX of the source ("" if none); :attr:`HardCSELoss.citation` collects them.
    """

    name: str = "part"
    stage: str = "term"
    title: str = ""
    citation: str = ""

    def contribute(self, batch: ContrastiveBatch) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def forward(self, batch: ContrastiveBatch) -> None:
        self.contribute(batch)

    def get_config_dict(self) -> dict[str, Any]:
        """The part's settings: its ``config`` dataclass as a dict, if it has one."""
        config = getattr(self, "config", None)
        if config is not None and dataclasses.is_dataclass(config) and not isinstance(config, type):
            return dataclasses.asdict(config)
        return {}


def info_nce(batch: ContrastiveBatch) -> Tensor:
    """The SimCSE InfoNCE of ``batch`` (:class:`~hardcse.objectives.heads.InfoNCE`, the default head)."""
    return F.cross_entropy(batch.logits(), batch.labels())


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


class HardCSELoss(nn.Module):
    """Unsupervised contrastive loss over two dropout views, extended by :class:`Part` objects.

    Args:
        model: the SentenceTransformer being trained (its last module may be the train-only head).
        parts: the method's parts, applied in order.
        temperature: tau in the InfoNCE (0.05 in SimCSE, ClusterNS and HSimCSE).
        gather_across_devices: gather both views over processes so the loss sees the global batch.
        length_chunks: encode the two views in this many length-sorted forward passes, each padded
            to its own longest row (1: one pass, as the official code; see :meth:`encode_two_views`).
        mini_batch_size: cache the step (:meth:`forward_cached`): encode this many encoder rows
            (of the 2N rows of the two views) at a time, so activation memory is that of a
            mini-batch while the loss sees the whole batch. ``None``: one graph for the batch.
        head: the contrastive head (:mod:`hardcse.objectives.heads`); default the SimCSE InfoNCE.
        cached_step: the settings of a cached step (:class:`~hardcse.objectives.cached.CachedStep`);
            default ``CachedStep(mini_batch_size)`` when ``mini_batch_size`` is given.

    The parts run in the order of their stage (:data:`STAGES`), in recipe order within a stage,
    then the head; the parts stay in recipe order in ``parts`` (and so in saved state).

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
        mini_batch_size: int | None = None,
        head: ContrastiveHead | None = None,
        cached_step: CachedStep | None = None,
    ) -> None:
        super().__init__()
        if cached_step is None and mini_batch_size is not None:
            cached_step = CachedStep(mini_batch_size)
        elif cached_step is not None and mini_batch_size not in (None, cached_step.mini_batch_size):
            raise ConfigError("give mini_batch_size or a cached_step, not two different mini-batch sizes.")
        self.cached_step = cached_step
        self.model = model
        self.parts = nn.ModuleList(parts)
        self.head = head if head is not None else InfoNCE()
        bad = [p for p in self.parts if getattr(p, "stage", "term") not in STAGES]
        if bad:
            raise ConfigError(
                f"part '{bad[0].name}' has stage '{bad[0].stage}'; a part's stage is one of {', '.join(STAGES)}."
            )
        self.temperature = temperature
        self.gather_across_devices = gather_across_devices
        self.length_chunks = max(1, int(length_chunks))
        # The optimisation step, counted on training forwards; saved with the parts' state.
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.last_diagnostics: dict[str, Any] = {}

    @property
    def mini_batch_size(self) -> int | None:
        """Sentences per mini-batch of a cached step (``None``: one graph for the batch)."""
        return None if self.cached_step is None else self.cached_step.mini_batch_size

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
        n = _num_rows(features)
        emb = self.encode_rows(self._two_views(features))
        return emb[:n], emb[n:]

    def _two_views(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        """The 2N encoder rows of a batch: the batch stacked on itself, or, when the encoder's first
        module builds its own views (``two_views``: the prompt encoder wraps view 1 and view 2 in
        different templates, :mod:`hardcse.models.prompt`), those rows."""
        first = self.model[0] if isinstance(self.model, nn.Sequential) and len(self.model) else None
        views = getattr(first, "two_views", None)
        return views(features) if callable(views) else _doubled(features)

    def encode_rows(self, features: dict[str, Tensor], rows: Tensor | None = None) -> Tensor:
        """Embeddings of the rows ``rows`` of the tokenised ``features`` (all rows if ``None``), in
        that order, in ``length_chunks`` padding-optimal passes (:meth:`encode_two_views`).

        A subset of a right-padded input is cut to its own longest row first (the cut columns are
        padding of every selected row). ``features`` is not modified.
        """
        features = dict(features)
        mask = features.get("attention_mask")
        if rows is not None:
            cut = mask is not None and self._pads_right(mask)
            features = _select_rows(features, rows, _num_rows(features), cut=cut)
            mask = features.get("attention_mask")
        if self.length_chunks == 1 or mask is None or not self._pads_right(mask):
            return self.model(features)["sentence_embedding"]
        doubled, total = features, mask.shape[0]
        lengths = mask.sum(dim=1)
        order = torch.argsort(lengths, stable=True)
        width = mask.shape[1]
        lookup = self._word_embeddings()
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
            pieces.append(self.model(chunk)["sentence_embedding"])
        return torch.cat(pieces)[torch.argsort(order)]

    def _word_embeddings(self) -> nn.Module | None:
        """The encoder's input embedding module if its forward takes ``inputs_embeds``, else ``None``."""
        if "_lookup" not in self.__dict__:
            # Kept outside nn.Module's registry: the loss must not own (or save) the encoder's weights.
            lookup = None
            first = self.model[0] if isinstance(self.model, nn.Sequential) and len(self.model) else None
            encoder = getattr(first, "model", None)  # sentence-transformers >= 6: Transformer.model
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
        if self.cached_step is not None:
            return self.forward_cached(features, labels)
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

                ids = all_gather(ids) if process_group.is_initialized() else ids
        return self.compute_loss_from_embeddings(z1, z2, ids)

    def forward_cached(self, features: list[dict[str, Tensor]], labels: Tensor | None = None) -> dict[str, Tensor]:
        """The loss components of a cached step (GradCache; :mod:`hardcse.objectives.cached`).

        1. The encoder rows (the batch stacked on itself, or the two text columns) are cut into
           mini-batches of ``cached_step.rows_per_pass`` rows, in ascending length, and encoded without a graph;
           the random state before each one is kept.
        2. The embeddings are gathered over processes (without gradient) and the whole objective
           runs once on the global batch, on detached copies that require grad, as in
           :meth:`forward` (every part: centroid negatives, BML, the adversarial positive, corpus
           negatives, diagnostics, the clustering update and step counter, once per step). Its
           gradient ``g = d(sum of components)/dz`` is taken here.
        3. The components are returned detached; ``infonce`` carries a hook, so when the trainer
           back-propagates their sum, each mini-batch is re-encoded with a graph under its kept
           random state (the same dropout masks, fast CPU dropout included) and autocast setting,
           and ``<z_mb, grad_out * W * g_mb>`` is back-propagated, with ``g_mb`` this process's rows
           of ``g`` and ``W`` the number of processes. ``W`` is what ``all_gather_with_grad`` gives
           a shard in :meth:`forward` (every process's loss sends it ``dL/dz``), which DDP's
           average over processes then divides out, so the parameters get the uncached step's
           gradient (``tests/test_cached.py``, in one and in two processes).

        The hook assumes the trainer differentiates the *sum* of the components, as
        sentence-transformers' trainer does. In evaluation (no grad) only step 1 and the loss run.
        """
        from hardcse.objectives.cached import AutocastState, RNGSnapshot, ddp_sync_context, gather_no_grad, split_rows

        settings = self.cached_step

        n = _num_rows(features[0])
        sources = [self._two_views(features[0])] if len(features) == 1 else features[:2]
        train = torch.is_grad_enabled()
        chunks: list[tuple[int, Tensor | None]] = []  # (source, rows); rows None: the whole source
        for s, source in enumerate(sources):
            mask = source.get("attention_mask")
            total = _num_rows(source)
            pads_right = mask is not None and self._pads_right(mask)
            rows = split_rows(mask, total, settings.rows_per_pass, pads_right)
            chunks.extend([(s, None)] if rows is None else [(s, r) for r in rows])
        # Step 3 may run every replayed pass but the last on token embeddings taken as a leaf
        # (_Replay); the last kept_passes passes keep their graph here and are not replayed at all.
        lookup = self._word_embeddings() if train else None
        leaf_ids = lookup is not None and len(chunks) > 1 and all(torch.is_tensor(f.get("input_ids")) for f in sources)
        keep_from = len(chunks) - min(settings.kept_passes, len(chunks) - 1) if train else len(chunks)
        states: list[RNGSnapshot | None] = []
        pieces: list[Tensor] = []
        kept: dict[int, tuple[Tensor, Tensor | None, Tensor | None]] = {}
        with torch.no_grad():
            for i, (s, rows) in enumerate(chunks):
                if i >= keep_from:
                    # No graph-free pass: this one's graph is built now (as a replayed pass's, outside
                    # DDP's gradient synchronisation) and back-propagated first in step 3.
                    states.append(None)
                    with torch.enable_grad(), ddp_sync_context(self.model, last=False):
                        emb, leaf, ids = _encode_pass(self, sources[s], rows, lookup if leaf_ids else None)
                    kept[i] = (emb, leaf, ids)
                    pieces.append(emb.detach().float())
                    continue
                if train:
                    device = sources[s]["input_ids"].device if "input_ids" in sources[s] else torch.device("cpu")
                    states.append(RNGSnapshot(device))
                pieces.append(self.encode_rows(sources[s], rows).float())
        # Each source's rows back in their order, then the sources stacked: rows [0, n) are view 1.
        offsets, emb_parts, k = [], [], 0
        for s, source in enumerate(sources):
            total = _num_rows(source)
            block = pieces[k].new_empty((total, pieces[k].shape[1]))
            while k < len(chunks) and chunks[k][0] == s:
                rows = chunks[k][1]
                block[slice(None) if rows is None else rows] = pieces[k]
                k += 1
            offsets.append(sum(p.shape[0] for p in emb_parts))
            emb_parts.append(block)
        emb = torch.cat(emb_parts)
        z1, z2 = emb[:n], emb[n:]
        ids = labels.long() if labels is not None and labels.numel() == n else None
        rank, size = process_group.rank_and_size() if self.gather_across_devices else (0, 1)
        if size > 1:
            z1, z2 = gather_no_grad(z1), gather_no_grad(z2)
            ids = gather_no_grad(ids) if ids is not None else None
        if not train:
            return self.compute_loss_from_embeddings(z1, z2, ids)
        z1, z2 = z1.requires_grad_(), z2.requires_grad_()
        losses = self.compute_loss_from_embeddings(z1, z2, ids)
        total_loss = torch.stack([v.float() for v in losses.values()]).sum()
        if total_loss.requires_grad:
            # fp32 like the loss (a backward under the trainer's autocast would run its matmuls in bf16/fp16).
            with torch.autocast(device_type=z1.device.type, enabled=False):
                g1, g2 = torch.autograd.grad(total_loss, [z1, z2], allow_unused=True)
        else:
            g1 = g2 = None
        g1 = torch.zeros_like(z1) if g1 is None else g1
        g2 = torch.zeros_like(z2) if g2 is None else g2
        mine = slice(rank * n, (rank + 1) * n)
        grad = torch.cat([g1[mine], g2[mine]]) * size  # this process's rows, in the stacked order
        del g1, g2, z1, z2, emb
        autocast = AutocastState.capture(pieces[0].device)
        replay = _Replay(self, sources, chunks, states, offsets, grad, autocast, kept, lookup if leaf_ids else None)
        out = {key: value.detach() for key, value in losses.items()}
        carrier = next(iter(out))
        out[carrier] = out[carrier].requires_grad_()
        out[carrier].register_hook(replay)
        return out

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
            for part in self.ordered_parts():
                part(batch)
            losses = {self.head.name: self.head(batch)}
            clash = sorted(set(batch.losses) & set(losses))
            if clash:
                raise ConfigError(f"a part adds a loss named '{clash[0]}', the name of the head's loss; rename it.")
            losses.update(batch.losses)
        if self.training:
            self.step += 1
            self.last_diagnostics = batch.diagnostics
        return losses

    def ordered_parts(self) -> list[Part]:
        """The parts in the order a step runs them: by stage (:data:`STAGES`), then recipe order."""
        return sorted(self.parts, key=lambda part: STAGES.index(getattr(part, "stage", "term")))

    def get_config_dict(self) -> dict[str, Any]:
        """Every setting of the objective: the frame's, the head's and each part's (by its name)."""
        return {
            "temperature": self.temperature,
            "head": {"name": self.head.name, **self.head.get_config_dict()},
            "parts": {p.name: p.get_config_dict() for p in self.parts},
            "gather_across_devices": self.gather_across_devices,
            "length_chunks": self.length_chunks,
            "mini_batch_size": self.mini_batch_size,
            "cached_step": None if self.cached_step is None else dataclasses.asdict(self.cached_step),
        }

    @property
    def citations(self) -> list[tuple[str, str]]:
        """``(title, BibTeX)`` of every source of the objective, each once: SimCSE (the frame: two
        dropout views of each sentence), the head, then every part in recipe order."""
        found = [("SimCSE", SIMCSE_CITATION), (self.head.title or self.head.name, self.head.citation)]
        found += [(p.title or p.name, p.citation) for p in self.parts]
        cited: dict[str, tuple[str, str]] = {}
        for title, bibtex in found:
            if bibtex and bibtex.strip() not in cited:
                cited[bibtex.strip()] = (title, bibtex)
        return list(cited.values())

    @property
    def citation(self) -> str:
        """The BibTeX of every method of the objective (:attr:`citations`), one entry after another."""
        return "\n\n".join(bibtex.strip() for _, bibtex in self.citations)


def _num_rows(features: dict[str, Tensor]) -> int:
    for key in ("input_ids", "attention_mask", "inputs_embeds"):
        if torch.is_tensor(features.get(key)):
            return features[key].shape[0]
    return next(v.shape[0] for v in features.values() if torch.is_tensor(v) and v.dim() >= 1)


def _doubled(features: dict[str, Tensor]) -> dict[str, Tensor]:
    """The batch stacked on itself (rows i and n + i: the two dropout views of sentence i)."""
    return {k: torch.cat([v, v], dim=0) if torch.is_tensor(v) else v for k, v in features.items()}


def _select_rows(features: dict[str, Tensor], rows: Tensor, total: int, cut: bool) -> dict[str, Tensor]:
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


class _Replay:
    """The backward hook of a cached step (:meth:`HardCSELoss.forward_cached`, step 3).

    It holds this one step's inputs, random states, kept graphs and embedding gradients, so a
    later forward pass cannot change what it back-propagates; they are released once used.

    The passes whose graph was kept in step 1 (``kept``, the last ``kept_passes``) are
    back-propagated first, freeing their graphs before any replayed one is built; then every
    other pass is re-encoded and back-propagated, the last of them inside DDP's synchronisation.
    With ``lookup`` (the word embeddings): the backward of a lookup builds a dense vocabulary x dim
    gradient (47 MB for BERT's) and adds it to the weight's; once per pass that was ~4% of a
    512-sentence step in 16 passes. So every pass but the last takes its token embeddings as a
    leaf whose gradient is summed per distinct token id of the step, and the last pass's backward
    runs one lookup of those ids with those sums.
    """

    def __init__(self, loss, sources, chunks, states, offsets, grad, autocast, kept=None, lookup=None) -> None:
        self.loss, self.sources, self.chunks, self.states = loss, sources, chunks, states
        self.offsets, self.grad, self.autocast = offsets, grad, autocast
        self.kept, self.lookup = dict(kept or {}), lookup

    def __call__(self, grad_output: Tensor) -> None:
        from hardcse.objectives.cached import ddp_sync_context, release_freed_memory

        loss, lookup = self.loss, self.lookup
        policy = loss.cached_step.release_policy
        order = sorted(self.kept) + [i for i in range(len(self.chunks)) if i not in self.kept]
        step_ids = token_grads = None
        if lookup is not None:
            step_ids = torch.unique(torch.cat([f["input_ids"].reshape(-1) for f in self.sources]))
            token_grads = lookup.weight.new_zeros((len(step_ids), lookup.weight.shape[1]))
        scale = grad_output.to(self.grad.dtype)
        if policy == "before_replay":
            release_freed_memory(self.grad.device)  # the graph-free pass's blocks, before the graphs
        with torch.enable_grad():
            for n, i in enumerate(order):
                (s, rows), last = self.chunks[i], n == len(order) - 1
                if i in self.kept:
                    emb, leaf, ids = self.kept.pop(i)
                    if emb.requires_grad:
                        torch.autograd.backward([emb.float()], [self._grad_rows(s, rows, emb) * scale])
                else:
                    # DDP decides in the forward whether the backward all-reduces: only the last one does.
                    # The forward runs under the step's autocast, the backward outside it (as the trainer's).
                    with ddp_sync_context(loss.model, last=last):
                        with self.states[i].replay(), self.autocast.context():
                            leaf_lookup = lookup if step_ids is not None and not last else None
                            emb, leaf, ids = _encode_pass(loss, self.sources[s], rows, leaf_lookup)
                        # Backward of <emb, g>: this mini-batch's share of dL/dtheta (grad_output carries
                        # the trainer's loss scaling and gradient-accumulation division).
                        outputs = [emb.float()] if emb.requires_grad else []
                        grads = [self._grad_rows(s, rows, emb) * scale] if emb.requires_grad else []
                        if last and step_ids is not None and lookup.weight.requires_grad:
                            outputs.append(lookup(step_ids))
                            grads.append(token_grads.to(outputs[-1].dtype))
                        if outputs:
                            torch.autograd.backward(outputs, grads)
                if leaf is not None and leaf.grad is not None:
                    where_ids = torch.searchsorted(step_ids, ids.reshape(-1))
                    token_grads.index_add_(0, where_ids, leaf.grad.reshape(-1, leaf.shape[-1]).to(token_grads.dtype))
                del emb, leaf, ids
                if policy == "mini_batch":
                    release_freed_memory(self.grad.device)  # the next mini-batch's activations have other sizes
        if policy == "step":
            release_freed_memory(self.grad.device)
        self.sources = self.states = self.grad = None  # free the step's inputs once used

    def _grad_rows(self, source: int, rows: Tensor | None, emb: Tensor) -> Tensor:
        """This pass's rows of the embedding gradient ``g``, in the pass's row order."""
        start = self.offsets[source]
        return self.grad[slice(start, start + emb.shape[0]) if rows is None else rows + start]


def _encode_pass(
    loss: HardCSELoss, source: dict[str, Tensor], rows: Tensor | None, lookup: nn.Module | None
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """One mini-batch pass of a cached step with a graph: the embeddings of rows ``rows`` of
    ``source``, and, with ``lookup``, the token-embedding leaf it ran on and its ids
    (:func:`_with_token_leaf`; else ``None, None``)."""
    if lookup is None:
        return loss.encode_rows(source, rows), None, None
    features, leaf, ids = _with_token_leaf(loss, source, rows, lookup)
    return loss.encode_rows(features), leaf, ids


def _with_token_leaf(
    loss: HardCSELoss, source: dict[str, Tensor], rows: Tensor | None, lookup: nn.Module
) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """The rows ``rows`` of ``source`` (cut to their longest row) with their token embeddings as a
    leaf ``inputs_embeds`` in place of ``input_ids``; that leaf; and the ids."""
    features = dict(source)
    if rows is not None:
        mask = features.get("attention_mask")
        cut = mask is not None and loss._pads_right(mask)
        features = _select_rows(features, rows, _num_rows(features), cut=cut)
    ids = features.pop("input_ids")
    with torch.no_grad():
        leaf = lookup(ids)
    leaf.requires_grad_()
    features["inputs_embeds"] = leaf
    return features, leaf, ids
