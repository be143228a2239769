"""The modified K-means of ClusterNS (Deng et al., Findings of ACL 2023), as training state.

:class:`ClusterState` keeps K centroids of the view-1 sentence vectors and runs, once per
training forward, the state machine of the official code (``kmeans_cluster`` in
``djz233/ClusterNS``):

(a) **Start trigger.** While not started, clustering starts at the first step where the mean of
    the *whole* N x N cross-view cosine matrix (diagonal included, no temperature) is
    ``<= theta``. It starts once and is never redone. On the start step itself the fresh
    centroids are not used (no hard negatives, no false-negative mask).
(b) **Greedy-chain initialisation.** ``c_1 = z_r`` for a random row ``r``; then for k = 2..K the
    column of the previous pick is set to +100 in the cross-view matrix ``S = cos(z, z')`` (so
    every pick stays excluded) and ``next = argmin_j S[last, j]``, ``c_k = z_next``. Each new
    centroid is the point least similar to the *previous* pick. Needs K <= N.
(c) **Per step after the start**, with the detached view-1 vectors ``z`` (cast to fp32):

    1. assign ``a_i = argmax_k cos(z_i, c_k)``;
    2. update, only for clusters that received at least one point (others unchanged):
       ``momentum``: ``c_k <- eta * sum_{i: a_i = k} z_i + (1 - eta) * c_k`` (official default);
       ``kmeans``: ``c_k <- sum_{i: a_i = k} z_i``.
       Note the **sum**, not the mean, and no renormalisation (official);
    3. hard negative of row i: the centroid with the second-highest cosine to ``z_i``, using
       the *updated* centroids;
    4. false-negative mask ``M_ij = [a'_i = a'_j and i != j]`` from a re-assignment ``a'`` with
       the updated centroids.

Differences from the official code, all numerically neutral or opt-in:

* centroids and their update are kept in fp32 whatever the input dtype (the official fp16
  centroids sit at the resolution limit of half precision with eta = 1e-3), and the clustering
  arithmetic runs with autocast disabled;
* the random first row of the chain comes from a ``torch.Generator`` seeded with
  ``(seed, step)``, so every process picks the same row and a resumed run re-picks it exactly
  (official: Python ``random``, seeded identically on every rank);
* the ``adamw`` update rule of the official code (unused by every released script) is not
  implemented;
* options (defaults = official): ``centroid_update="mean"`` uses the mean of the assigned
  points instead of the sum; ``reinit_empty=True`` re-initialises every cluster that has
  received no point for ``reinit_patience`` consecutive steps from the batch points farthest
  from (least cosine-similar to) their own centroid, one distinct point per cluster, at most N
  per step, after the update and before hard negatives and mask are computed.

All state is in buffers of fixed shape (``centroids`` K x d fp32, ``started`` bool,
``start_step`` long, -1 before the start, ``updates`` long, ``empty_steps`` K long,
``reinitialized`` long), so ``state_dict()`` saves and restores it exactly. Every process of a
distributed run keeps its own copy, fed by the same gathered batch, as the official code.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from hardcse.errors import ConfigError
from hardcse.numeric import pairwise_cosine

UPDATE_RULES = ("momentum", "kmeans")
CENTROID_UPDATES = ("sum", "mean")


def too_few_sentences_message(k: int, n: int) -> str:
    """The one-sentence error for a batch smaller than the number of clusters."""
    return (
        f"ClusterNS needs at least K={k} sentences in a (global) batch, got N={n}; "
        "lower --set clusterns.k=K or raise --batch-size."
    )


def _no_autocast(device: torch.device):
    if device.type in ("cuda", "cpu", "xpu", "mps", "hpu"):
        return torch.autocast(device_type=device.type, enabled=False)
    return nullcontext()


@dataclass
class ClusterStep:
    """What one step of the clustering produced for the loss.

    ``active`` is True when centroids were used at this step (started before this step).
    ``assignment`` (N, long) is the re-assignment with the updated centroids, ``hard_negative``
    (N, long) each row's second-nearest centroid index, ``mask`` (N x N, bool) the
    false-negative mask, ``sizes`` (K, long) the cluster sizes of ``assignment``; all None when
    not active. ``started_now`` is True on the step that initialised the centroids;
    ``mean_cos`` the batch-mean cosine (fp32, 0-d); ``reinitialized`` clusters re-initialised
    at this step (0-d long, or None).
    """

    active: bool
    started_now: bool
    mean_cos: Tensor
    assignment: Tensor | None = None
    hard_negative: Tensor | None = None
    mask: Tensor | None = None
    sizes: Tensor | None = None
    reinitialized: Tensor | None = None


class ClusterState(nn.Module):
    """K centroids and the ClusterNS start/initialise/assign/update state machine (module doc).

    Args:
        k: number of clusters K (official default 128).
        dim: vector dimension d.
        theta: start clustering when the batch-mean cosine is ``<= theta`` (official 0.4).
        eta: momentum coefficient of the ``momentum`` update (official 1e-3).
        update_rule: ``"momentum"`` (official default) or ``"kmeans"`` (replace by the sum/mean).
        centroid_update: ``"sum"`` (official) or ``"mean"`` of the assigned points.
        reinit_empty: re-initialise clusters left empty for ``reinit_patience`` steps.
        reinit_patience: consecutive empty steps before a cluster is re-initialised (>= 1).
        seed: seed of the random first row of the initialisation chain (mixed with the step).
        batch_size: the configured global batch size, if known. When the trigger fires on a
            batch smaller than K but the configured batch holds at least K sentences (a short
            last batch), the start is deferred to a later batch instead of failing.
    """

    def __init__(
        self,
        k: int,
        dim: int,
        theta: float = 0.4,
        eta: float = 1e-3,
        update_rule: str = "momentum",
        centroid_update: str = "sum",
        reinit_empty: bool = False,
        reinit_patience: int = 100,
        seed: int = 42,
        batch_size: int | None = None,
    ) -> None:
        super().__init__()
        if k < 1:
            raise ConfigError(f"the number of ClusterNS clusters K must be at least 1, got {k}.")
        if dim < 1:
            raise ConfigError(f"the ClusterNS vector dimension must be at least 1, got {dim}.")
        for name, value, allowed in (
            ("update_rule", update_rule, UPDATE_RULES),
            ("centroid_update", centroid_update, CENTROID_UPDATES),
        ):
            if value not in allowed:
                raise ConfigError(f"unknown ClusterNS {name} '{value}'; choose one of {', '.join(allowed)}.")
        if reinit_patience < 1:
            raise ConfigError(f"ClusterNS reinit_patience must be at least 1 step, got {reinit_patience}.")
        if not 0.0 <= eta <= 1.0:
            raise ConfigError(f"the ClusterNS momentum eta must be in [0, 1], got {eta}.")
        self.k = int(k)
        self.dim = int(dim)
        self.theta = float(theta)
        self.eta = float(eta)
        self.update_rule = update_rule
        self.centroid_update = centroid_update
        self.reinit_empty = bool(reinit_empty)
        self.reinit_patience = int(reinit_patience)
        self.seed = int(seed)
        self.batch_size = batch_size
        self.register_buffer("centroids", torch.zeros(self.k, self.dim, dtype=torch.float32))
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))
        self.register_buffer("start_step", torch.full((), -1, dtype=torch.long))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("empty_steps", torch.zeros(self.k, dtype=torch.long))
        self.register_buffer("reinitialized", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return (
            f"k={self.k}, dim={self.dim}, theta={self.theta}, eta={self.eta}, "
            f"update_rule={self.update_rule}, centroid_update={self.centroid_update}, "
            f"reinit_empty={self.reinit_empty}"
        )

    @property
    def is_started(self) -> bool:
        return bool(self.started)

    # -- pieces ---------------------------------------------------------------------------
    def first_row(self, n: int, step: int) -> int:
        """The random first row of the chain, a function of (seed, step) only."""
        gen = torch.Generator(device="cpu")
        gen.manual_seed((self.seed * 1_000_003 + int(step)) % (2**63 - 1))
        return int(torch.randint(n, (1,), generator=gen))

    def initialize(self, z: Tensor, sim: Tensor, step: int, first: int | None = None) -> Tensor:
        """Greedy-chain initialisation from the view-1 vectors ``z`` (N x d) and the cross-view
        cosine matrix ``sim`` (N x N); returns the K picked row indices.

        The chain is sequential by nature (each pick depends on the previous one): one small
        argmin per centroid, once per run.
        """
        n = z.shape[0]
        if n < self.k:
            raise ConfigError(too_few_sentences_message(self.k, n))
        x = z.detach().float()
        s = sim.detach().float().clone()
        last = torch.tensor(self.first_row(n, step) if first is None else int(first), device=x.device)
        picks = [last]
        for _ in range(1, self.k):
            s[:, last] = 100.0
            last = torch.argmin(s[last])
            picks.append(last)
        idx = torch.stack(picks)
        self.centroids.copy_(x[idx])
        self.started.fill_(True)
        self.start_step.fill_(int(step))
        self.empty_steps.zero_()
        return idx

    def similarities(self, z: Tensor) -> Tensor:
        """``cos(z_i, c_k)``, N x K, in fp32."""
        return pairwise_cosine(z.detach().float(), self.centroids)

    def assign(self, z: Tensor) -> Tensor:
        """Cosine assignment ``argmax_k cos(z_i, c_k)`` (N, long)."""
        return self.similarities(z).argmax(dim=1)

    def update(self, z: Tensor, assignment: Tensor) -> Tensor:
        """Update the centroids of the clusters that received points; returns the sizes (K)."""
        x = z.detach().float()
        sizes = torch.bincount(assignment, minlength=self.k)
        agg = torch.zeros_like(self.centroids).index_add_(0, assignment, x)
        if self.centroid_update == "mean":
            agg = agg / sizes.clamp_min(1).unsqueeze(1).to(agg.dtype)
        new = self.eta * agg + (1.0 - self.eta) * self.centroids if self.update_rule == "momentum" else agg
        got = (sizes > 0).unsqueeze(1)
        self.centroids.copy_(torch.where(got, new, self.centroids))
        self.empty_steps.copy_(torch.where(got.squeeze(1), 0, self.empty_steps + 1))
        self.updates += 1
        return sizes

    def reinit_stale(self, z: Tensor) -> Tensor:
        """Move clusters empty for ``reinit_patience`` steps onto the batch points farthest from
        their own centroid (one distinct point each, farthest first); returns how many moved."""
        x = z.detach().float()
        n = x.shape[0]
        stale = self.empty_steps >= self.reinit_patience
        rank = torch.cumsum(stale.long(), 0) - 1  # order of each stale cluster among the stale
        chosen = stale & (rank < n)
        own = self.similarities(x).max(dim=1).values  # cos to own centroid
        farthest = torch.argsort(own, stable=True)  # least similar first
        src = x[farthest[rank.clamp(0, n - 1)]]
        self.centroids.copy_(torch.where(chosen.unsqueeze(1), src, self.centroids))
        self.empty_steps.masked_fill_(chosen, 0)
        moved = chosen.sum()
        self.reinitialized += moved
        return moved

    def hard_negatives(self, z: Tensor) -> Tensor:
        """Index of each row's second-nearest centroid (N, long); needs K >= 2."""
        if self.k < 2:
            raise ConfigError("ClusterNS hard negatives need at least K=2 clusters; raise --set clusterns.k=K.")
        return self.similarities(z).topk(2, dim=1).indices[:, 1]

    @staticmethod
    def same_cluster_mask(assignment: Tensor) -> Tensor:
        """``M_ij = [a_i = a_j and i != j]`` (N x N, bool)."""
        same = assignment.unsqueeze(0) == assignment.unsqueeze(1)
        return same & ~torch.eye(assignment.shape[0], dtype=torch.bool, device=assignment.device)

    # -- the state machine ----------------------------------------------------------------
    def forward(
        self,
        z: Tensor,
        sim: Tensor,
        step: int,
        update: bool = True,
        hard_negatives: bool = True,
    ) -> ClusterStep:
        """One step for view-1 vectors ``z`` (N x d) and cross-view cosines ``sim`` (N x N).

        With ``update=False`` (evaluation) nothing changes: before the start nothing is
        returned; after it, hard negatives and mask come from the current centroids.
        """
        if self.centroids.device != z.device:
            self.to(z.device)
        with _no_autocast(z.device), torch.no_grad():
            mean_cos = sim.detach().float().mean()
            if not self.is_started:
                if not update or float(mean_cos) > self.theta:
                    return ClusterStep(active=False, started_now=False, mean_cos=mean_cos)
                n = z.shape[0]
                full = self.batch_size
                if n < self.k and full is not None and full >= self.k and n < full:
                    # A short (last) batch: wait for a full one rather than fail.
                    return ClusterStep(active=False, started_now=False, mean_cos=mean_cos)
                self.initialize(z, sim, step)
                return ClusterStep(active=False, started_now=True, mean_cos=mean_cos)
            moved = None
            if update:
                self.update(z, self.assign(z))
                if self.reinit_empty:
                    moved = self.reinit_stale(z)
            sims = self.similarities(z)
            assignment = sims.argmax(dim=1)
            hard = sims.topk(2, dim=1).indices[:, 1] if hard_negatives and self.k >= 2 else None
            return ClusterStep(
                active=True,
                started_now=False,
                mean_cos=mean_cos,
                assignment=assignment,
                hard_negative=hard,
                mask=self.same_cluster_mask(assignment),
                sizes=torch.bincount(assignment, minlength=self.k),
                reinitialized=moved,
            )
