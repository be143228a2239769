"""The pieces of a cached (GradCache-style) contrastive step: RNG replay, autocast replay,
mini-batch plans, a gradient-free gather and DDP synchronisation of the replayed passes.

A cached step (Gao et al., 2021, "Scaling Deep Contrastive Learning Batch Size under Memory
Limited Setup", arXiv:2101.06983) bounds the encoder's activation memory by a mini-batch while
the loss still sees the whole (global) batch:

1. encode every mini-batch without a graph, remembering the random state before each one;
2. compute the loss on all (gathered) embeddings ``z``, detached, and its gradient ``g = dL/dz``;
3. when the trainer back-propagates the loss, re-encode each mini-batch *with* a graph under the
   remembered random state (same dropout masks, so the same ``z``) and back-propagate the
   surrogate ``<z_mb, g_mb>``, whose gradient in the parameters is that mini-batch's share of
   ``dL/dtheta`` (chain rule: ``dL/dtheta = sum_mb (dz_mb/dtheta)^T g_mb``).

:class:`~hardcse.objectives.base.HardCSELoss` runs the three steps with the settings of its
:class:`CachedStep`; this module holds what they need and knows nothing of the objective.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from hardcse.errors import ConfigError
from hardcse.process_group import rank_and_size


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


def gather_no_grad(t: Tensor) -> Tensor:
    """All-gather ``t`` (equal shapes on every process) without gradient, in rank order."""
    rank, size = rank_and_size()
    if size == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(size)]
    torch.distributed.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=0)


_LIBC: list = []

#: When a cached step may give the freed heap pages back on the CPU (:attr:`CachedStep.release_policy`).
RELEASE_POLICIES = ("step", "mini_batch", "before_replay", "off")


@dataclass(frozen=True)
class CachedStep:
    """The settings of a cached step (GradCache), owned by the loss that runs it
    (:meth:`hardcse.objectives.base.HardCSELoss.forward_cached`); pass another one to the loss to
    measure a variant (``benchmarks/perf.py --cached-extra``).

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
