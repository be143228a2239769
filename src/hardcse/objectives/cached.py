"""The cached (GradCache-style) contrastive step: :class:`CachedStep`, its settings and the pieces
it needs (RNG replay, autocast replay, mini-batch plans, DDP synchronisation of the replayed
passes, heap release).

A cached step (Gao et al., 2021, "Scaling Deep Contrastive Learning Batch Size under Memory
Limited Setup", arXiv:2101.06983) bounds the encoder's activation memory by a mini-batch while
the loss still sees the whole (global) batch:

1. encode every mini-batch without a graph, remembering the random state before each one;
2. compute the loss on all (gathered) embeddings ``z``, detached, and its gradient ``g = dL/dz``;
3. when the trainer back-propagates the loss, re-encode each mini-batch *with* a graph under the
   remembered random state (same dropout masks, so the same ``z``) and back-propagate the
   surrogate ``<z_mb, g_mb>``, whose gradient in the parameters is that mini-batch's share of
   ``dL/dtheta`` (chain rule: ``dL/dtheta = sum_mb (dz_mb/dtheta)^T g_mb``).

:meth:`CachedStep.run` runs the three steps with the encoding strategy it is given
(:class:`~hardcse.objectives.encoding.TwoViewEncoder`: the views' rows, length chunks, the
word-embedding lookup, the gather) and a callable that computes the loss components from the
views (the objective, :meth:`~hardcse.objectives.base.HardCSELoss.compute_loss_from_embeddings`);
it knows nothing else of the objective.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from hardcse.errors import ConfigError
from hardcse.objectives.encoding import TwoViewEncoder, num_rows, pads_right, select_rows


class RNGSnapshot:
    """The CPU generator's state (and the CUDA device's, for a CUDA encoder) at one moment.

    Dropout draws from these default generators: torch's ``nn.Dropout`` and SDPA's dropout, and
    hardcse's fast CPU dropout (:func:`hardcse.models.dropout.keep_mask` calls ``torch.randint``
    without a generator), so restoring the state before a second forward pass of the same inputs
    reproduces every mask. Other generators (MPS, XPU) are not captured.
    """

    def __init__(self, device: torch.device) -> None:
        self.cpu = torch.get_rng_state()
        self.device = device if device.type == "cuda" else None
        self.cuda = torch.cuda.get_rng_state(device) if self.device is not None else None

    @contextmanager
    def replay(self) -> Iterator[None]:
        """Run the body from the captured state; the generators continue afterwards as before."""
        devices = [self.device] if self.device is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.device is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield


@dataclass(frozen=True)
class AutocastState:
    """The autocast settings of the forward pass, re-entered for the replayed passes (the
    trainer calls ``backward`` outside its autocast context)."""

    device_type: str
    enabled: bool
    dtype: torch.dtype

    @classmethod
    def capture(cls, device: torch.device) -> AutocastState:
        kind = device.type
        return cls(kind, torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind))

    def context(self) -> torch.autocast:
        return torch.autocast(device_type=self.device_type, dtype=self.dtype, enabled=self.enabled)


def split_rows(mask: Tensor | None, total: int, rows_per_chunk: int, pads_right: bool) -> list[Tensor] | None:
    """The row indices of each mini-batch of a ``total``-row input, or ``None`` for one chunk.

    Rows are taken in ascending length (right-padded inputs with a mask), so that each chunk is
    padded only to its own longest row; otherwise in their order.
    """
    if total <= rows_per_chunk:
        return None
    if mask is not None and pads_right:
        order = torch.argsort(mask.sum(dim=1), stable=True)
    else:
        order = torch.arange(total, device=mask.device if mask is not None else None)
    return list(torch.split(order, rows_per_chunk))


_LIBC: list = []

#: When a cached step may give the freed heap pages back on the CPU (:attr:`CachedStep.release_policy`).
RELEASE_POLICIES = ("step", "mini_batch", "before_replay", "off")


def release_freed_memory(device: torch.device) -> None:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``), for CPU tensors.

    A cached step frees one mini-batch's activations before the next one allocates its own, of
    another size (the mini-batches are length-sorted); glibc keeps the freed blocks, fragmented, so
    without this the resident set of a 512-sentence step grew step by step (to ~1.35x that of an
    uncached 64-sentence step with passes of both views). When it runs is
    :attr:`CachedStep.release_policy`.
    No-op on other devices and C libraries.
    """
    if device.type != "cpu":
        return
    if not _LIBC:
        import ctypes
        import ctypes.util

        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.append(libc.malloc_trim if hasattr(libc, "malloc_trim") else None)
        except OSError:
            _LIBC.append(None)
    if _LIBC[0] is not None:
        _LIBC[0](0)


def ddp_sync_context(model: nn.Module, last: bool):
    """``no_sync`` for every replayed pass but the last, so a DDP model all-reduces its gradients
    once per step (after they are all accumulated); the last pass keeps whatever the trainer set
    (gradient accumulation may have switched synchronisation off for the whole step)."""
    ddp = isinstance(model, torch.nn.parallel.DistributedDataParallel)
    return model.no_sync() if ddp and not last else nullcontext()


@dataclass(frozen=True)
class CachedStep:
    """A cached step (GradCache) and its settings: :meth:`run` encodes a step's rows in
    mini-batches and returns loss components whose backward re-encodes them. The loss that owns it
    (:class:`~hardcse.objectives.base.HardCSELoss`) runs its steps through it; give the loss another
    one to measure a variant (``benchmarks/perf.py --cached-extra``).

    Args:
        mini_batch_size: sentences per mini-batch (at least 1).
        rows_per_sentence: encoder rows per pass, per sentence of ``mini_batch_size``. 1: a pass
            encodes ``mini_batch_size`` rows (of the two views stacked and length-sorted), so its
            graph holds half of an uncached step's at the same batch size, which leaves room for the
            heap's fragments without returning pages after every pass; 2: both views of
            ``mini_batch_size`` sentences per pass (the graph of an uncached step; peak RSS 1.09x,
            0.85x with 1, at 256:64; BENCHMARKS.md).
        kept_passes: mini-batch passes whose graph is kept from the first pass instead of encoding
            them without one and again with one: the last (longest) ones, at most all but one. Each
            saves a graph-free forward pass and holds one mini-batch's graph until the replay starts
            (where it is back-propagated first), so 1 keeps the peak at what the replay needs.
        release_policy: when freed heap pages go back to the system on the CPU
            (:func:`release_freed_memory`): once after the replay (``"step"``), after every
            replayed mini-batch (``"mini_batch"``), once between the graph-free pass and the replay
            (``"before_replay"``) or never (``"off"``). With passes of ``mini_batch_size`` rows,
            ``"step"`` keeps the peak RSS at that of an uncached 64-sentence step (0.99x at 256:64)
            for ~0.28x more time per sentence than it, where ``"mini_batch"`` costs ~0.5x (the
            pages it returns are faulted in again by the next pass).
    """

    mini_batch_size: int
    rows_per_sentence: int = 1
    kept_passes: int = 1
    release_policy: str = "step"

    def __post_init__(self) -> None:
        if self.mini_batch_size < 1:
            raise ConfigError(f"mini_batch_size must be at least 1 sentence (or unset), got {self.mini_batch_size}.")
        if self.rows_per_sentence not in (1, 2):
            raise ConfigError(f"rows_per_sentence is 1 or 2 (both views), got {self.rows_per_sentence}.")
        if self.kept_passes < 0:
            raise ConfigError(f"kept_passes must be 0 or more, got {self.kept_passes}.")
        if self.release_policy not in RELEASE_POLICIES:
            raise ConfigError(
                f"unknown release_policy '{self.release_policy}'; choose one of {', '.join(RELEASE_POLICIES)}."
            )

    @property
    def rows_per_pass(self) -> int:
        """Encoder rows per mini-batch pass."""
        return self.rows_per_sentence * self.mini_batch_size

    def get_config_dict(self) -> dict[str, Any]:
        """The settings, by name."""
        return dataclasses.asdict(self)

    def release_memory(self, device: torch.device) -> None:
        """Give freed heap pages back (:func:`release_freed_memory`), at the points
        :attr:`release_policy` names."""
        release_freed_memory(device)

    def run(
        self,
        model: nn.Module,
        encoder: TwoViewEncoder,
        features: Sequence[dict[str, Tensor]],
        labels: Tensor | None,
        objective: Callable[[Tensor, Tensor, Tensor | None], dict[str, Tensor]],
    ) -> dict[str, Tensor]:
        """The loss components of a cached step of ``model`` on ``features`` (one text column, or two).

        1. The encoder rows (``encoder.sources``: the 2N rows of the two views, or the two text
           columns) are cut into mini-batches of :attr:`rows_per_pass` rows, in ascending length,
           and encoded without a graph (``encoder.encode_rows``, in its length chunks); the random
           state before each one is kept.
        2. The embeddings are gathered over processes (without gradient) and ``objective`` runs
           once on the global batch, on detached copies that require grad, as in an uncached step
           (every part: centroid negatives, BML, the adversarial positive, corpus negatives,
           diagnostics, the clustering update and step counter, once per step). Its gradient
           ``g = d(sum of components)/dz`` is taken here.
        3. The components are returned detached; the first one (the head's, ``infonce``) carries a
           hook, so when the trainer back-propagates their sum, each mini-batch is re-encoded with
           a graph under its kept random state (the same dropout masks, fast CPU dropout included)
           and autocast setting, and ``<z_mb, grad_out * W * g_mb>`` is back-propagated, with
           ``g_mb`` this process's rows of ``g`` and ``W`` the number of processes. ``W`` is what
           ``all_gather_with_grad`` gives a shard in an uncached step (every process's loss sends
           it ``dL/dz``), which DDP's average over processes then divides out, so the parameters
           get the uncached step's gradient (``tests/test_cached.py``, in one and in two
           processes).

        The hook assumes the trainer differentiates the *sum* of the components, as
        sentence-transformers' trainer does. In evaluation (no grad) only step 1 and the loss run.
        """
        features = list(features)
        n = num_rows(features[0])
        sources = encoder.sources(model, features)
        train = torch.is_grad_enabled()
        chunks: list[tuple[int, Tensor | None]] = []  # (source, rows); rows None: the whole source
        for s, source in enumerate(sources):
            mask = source.get("attention_mask")
            total = num_rows(source)
            right = mask is not None and pads_right(mask)
            rows = split_rows(mask, total, self.rows_per_pass, right)
            chunks.extend([(s, None)] if rows is None else [(s, r) for r in rows])
        # Step 3 may run every replayed pass but the last on token embeddings taken as a leaf
        # (_Replay); the last kept_passes passes keep their graph here and are not replayed at all.
        lookup = encoder.word_embeddings(model) if train else None
        leaf_ids = lookup is not None and len(chunks) > 1 and all(torch.is_tensor(f.get("input_ids")) for f in sources)
        keep_from = len(chunks) - min(self.kept_passes, len(chunks) - 1) if train else len(chunks)
        states: list[RNGSnapshot | None] = []
        pieces: list[Tensor] = []
        kept: dict[int, tuple[Tensor, Tensor | None, Tensor | None]] = {}
        with torch.no_grad():
            for i, (s, rows) in enumerate(chunks):
                if i >= keep_from:
                    # No graph-free pass: this one's graph is built now (as a replayed pass's, outside
                    # DDP's gradient synchronisation) and back-propagated first in step 3.
                    states.append(None)
                    with torch.enable_grad(), ddp_sync_context(model, last=False):
                        emb, leaf, ids = _encode_pass(model, encoder, sources[s], rows, lookup if leaf_ids else None)
                    kept[i] = (emb, leaf, ids)
                    pieces.append(emb.detach().float())
                    continue
                if train:
                    device = sources[s]["input_ids"].device if "input_ids" in sources[s] else torch.device("cpu")
                    states.append(RNGSnapshot(device))
                pieces.append(encoder.encode_rows(model, sources[s], rows).float())
        # Each source's rows back in their order, then the sources stacked: rows [0, n) are view 1.
        offsets, emb_parts, k = [], [], 0
        for s, source in enumerate(sources):
            total = num_rows(source)
            block = pieces[k].new_empty((total, pieces[k].shape[1]))
            while k < len(chunks) and chunks[k][0] == s:
                rows = chunks[k][1]
                block[slice(None) if rows is None else rows] = pieces[k]
                k += 1
            offsets.append(sum(p.shape[0] for p in emb_parts))
            emb_parts.append(block)
        emb = torch.cat(emb_parts)
        rank, size = encoder.rank_and_size()
        z1, z2, ids = encoder.gather_no_grad(emb[:n], emb[n:], encoder.ids(labels, n))
        if not train:
            return objective(z1, z2, ids)
        z1, z2 = z1.requires_grad_(), z2.requires_grad_()
        losses = objective(z1, z2, ids)
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
        replay = _Replay(
            self, model, encoder, sources, chunks, states, offsets, grad, autocast, kept, lookup if leaf_ids else None
        )
        out = {key: value.detach() for key, value in losses.items()}
        carrier = next(iter(out))
        out[carrier] = out[carrier].requires_grad_()
        out[carrier].register_hook(replay)
        return out


class _Replay:
    """The backward hook of a cached step (:meth:`CachedStep.run`, step 3).

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

    def __init__(
        self, step, model, encoder, sources, chunks, states, offsets, grad, autocast, kept=None, lookup=None
    ) -> None:
        self.step, self.model, self.encoder = step, model, encoder
        self.sources, self.chunks, self.states = sources, chunks, states
        self.offsets, self.grad, self.autocast = offsets, grad, autocast
        self.kept, self.lookup = dict(kept or {}), lookup

    def __call__(self, grad_output: Tensor) -> None:
        step, lookup = self.step, self.lookup
        policy = step.release_policy
        order = sorted(self.kept) + [i for i in range(len(self.chunks)) if i not in self.kept]
        step_ids = token_grads = None
        if lookup is not None:
            step_ids = torch.unique(torch.cat([f["input_ids"].reshape(-1) for f in self.sources]))
            token_grads = lookup.weight.new_zeros((len(step_ids), lookup.weight.shape[1]))
        scale = grad_output.to(self.grad.dtype)
        if policy == "before_replay":
            step.release_memory(self.grad.device)  # the graph-free pass's blocks, before the graphs
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
                    with ddp_sync_context(self.model, last=last):
                        with self.states[i].replay(), self.autocast.context():
                            leaf_lookup = lookup if step_ids is not None and not last else None
                            emb, leaf, ids = _encode_pass(self.model, self.encoder, self.sources[s], rows, leaf_lookup)
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
                    step.release_memory(self.grad.device)  # the next mini-batch's activations have other sizes
        if policy == "step":
            step.release_memory(self.grad.device)
        self.sources = self.states = self.grad = None  # free the step's inputs once used

    def _grad_rows(self, source: int, rows: Tensor | None, emb: Tensor) -> Tensor:
        """This pass's rows of the embedding gradient ``g``, in the pass's row order."""
        start = self.offsets[source]
        return self.grad[slice(start, start + emb.shape[0]) if rows is None else rows + start]


def _encode_pass(
    model: nn.Module,
    encoder: TwoViewEncoder,
    source: dict[str, Tensor],
    rows: Tensor | None,
    lookup: nn.Module | None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """One mini-batch pass of a cached step with a graph: the embeddings of rows ``rows`` of
    ``source``, and, with ``lookup``, the token-embedding leaf it ran on and its ids
    (:func:`_with_token_leaf`; else ``None, None``)."""
    if lookup is None:
        return encoder.encode_rows(model, source, rows), None, None
    features, leaf, ids = _with_token_leaf(source, rows, lookup)
    return encoder.encode_rows(model, features), leaf, ids


def _with_token_leaf(
    source: dict[str, Tensor], rows: Tensor | None, lookup: nn.Module
) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """The rows ``rows`` of ``source`` (cut to their longest row) with their token embeddings as a
    leaf ``inputs_embeds`` in place of ``input_ids``; that leaf; and the ids."""
    features = dict(source)
    if rows is not None:
        mask = features.get("attention_mask")
        cut = mask is not None and pads_right(mask)
        features = select_rows(features, rows, num_rows(features), cut=cut)
    ids = features.pop("input_ids")
    with torch.no_grad():
        leaf = lookup(ids)
    leaf.requires_grad_()
    features["inputs_embeds"] = leaf
    return features, leaf, ids
