"""ClusterNS's centroid hard negatives: a negative miner over a modified K-means (Deng et al.,
Findings of ACL 2023; official code ``djz233/ClusterNS``).

A :class:`~hardcse.cluster.ClusterState` runs over the view-1 vectors during training (start when
the batch-mean cosine is ``<= theta``, then assign and update every step). Once it has started,
each anchor's denominator gains the ``N`` columns

.. math::

    \\sum_k e^{w 1[k=i]} e^{s(z_i, \\tilde c_k)/\\tau},

``c~_k`` the (detached) second-nearest centroid of sample ``k``: every row sees all N of them, as
the official code, with log-weight ``w`` on its own (official ``w = 0``). The miner also publishes
the same-cluster mask ``M_ij = [a'_i = a'_j, i != j]`` of the re-assignment as the batch's false
negatives (:meth:`~hardcse.objectives.base.ContrastiveBatch.mark_false_negatives`), for the
``false_negative`` handlers (:mod:`hardcse.objectives.parts.false_negatives`). Before the start
(and on the start step) it adds nothing: the loss is plain SimCSE.
"""

from __future__ import annotations

from typing import Any

import torch

from hardcse.cluster.kmeans import ClusterState
from hardcse.errors import ConfigError
from hardcse.numeric import pairwise_cosine
from hardcse.objectives.base import ContrastiveBatch, Part
from hardcse.objectives.citations import CLUSTERNS_CITATION

#: The diagnostics the miner records every step (floats; cluster statistics 0 while no centroids are used).
CENTROID_DIAGNOSTICS = (
    "cluster_started",
    "cluster_start_step",
    "batch_mean_cos",
    "cluster_size_min",
    "cluster_size_median",
    "cluster_size_max",
    "cluster_empty",
    "false_negative_pairs",
    "hard_negative_cos",
    "cluster_reinitialized",
)


class CentroidNegatives(Part):
    """Centroid hard-negative columns and the same-cluster false-negative mask (module doc).

    Args:
        cluster: the K-means state (its buffers are this part's checkpointed state).
        columns: append the centroid columns once clustering runs (ClusterNS ``hard_negatives``;
            off: the clustering only marks false negatives).
        log_weight: ``w``, added to the logit of each row's own centroid column.

    Diagnostics (:data:`CENTROID_DIAGNOSTICS`): ``cluster_started``, ``cluster_start_step`` (-1
    before), ``batch_mean_cos``, ``cluster_size_min/median/max`` and ``cluster_empty`` over the K
    clusters for this batch's assignment, ``false_negative_pairs`` (ordered pairs i != j in the
    mask), ``hard_negative_cos`` (mean cosine of a row to its own centroid column) and
    ``cluster_reinitialized`` (clusters moved at this step). In evaluation mode the state is not
    changed; after the start the current centroids are used.
    """

    name = "centroid_negatives"
    stage = "negative"
    title = "ClusterNS"
    citation = CLUSTERNS_CITATION

    def __init__(self, cluster: ClusterState, columns: bool = True, log_weight: float = 0.0) -> None:
        super().__init__()
        if columns and cluster.k < 2:
            raise ConfigError(
                "centroid hard negatives need K >= 2 (the hard negative is the second-nearest centroid), "
                f"got K={cluster.k}."
            )
        self.cluster = cluster
        self.columns = bool(columns)
        self.log_weight = float(log_weight)

    def get_config_dict(self) -> dict[str, Any]:
        c = self.cluster
        return {
            "k": c.k,
            "theta": c.theta,
            "eta": c.eta,
            "update_rule": c.update_rule,
            "centroid_update": c.centroid_update,
            "reinit_empty": c.reinit_empty,
            "reinit_patience": c.reinit_patience,
            "seed": c.seed,
            "columns": self.columns,
            "log_weight": self.log_weight,
        }

    def contribute(self, batch: ContrastiveBatch) -> None:
        out = self.cluster(batch.z1, batch.sim, step=batch.step, update=batch.training, hard_negatives=self.columns)
        device = batch.sim.device
        zero = torch.zeros((), device=device)
        stats = [zero] * 6  # size min/median/max, empty, pairs, hard-negative cos
        if out.active:
            mask = out.mask
            if out.hard_negative is not None:
                hn = self.cluster.centroids[out.hard_negative]  # N x d, fp32, no gradient
                cols = pairwise_cosine(batch.z1.float(), hn)
                log_w = None
                if self.log_weight != 0.0:
                    log_w = self.log_weight * torch.eye(batch.size, device=cols.device, dtype=cols.dtype)
                batch.add_columns(cols, log_w)
                hn_cos = cols.detach().diagonal().float().mean()
            else:
                hn_cos = zero
            batch.mark_false_negatives(mask)
            sizes = out.sizes.float()
            stats = [
                sizes.min(),
                sizes.quantile(0.5),
                sizes.max(),
                (sizes == 0).sum().float(),
                mask.sum().float(),
                hn_cos,
            ]
        reinit = out.reinitialized if out.reinitialized is not None else zero
        values = torch.stack(
            [
                self.cluster.started.float(),
                self.cluster.start_step.float(),
                out.mean_cos.float(),
                *[v.detach().float().to(device) for v in stats],
                reinit.float().to(device),
            ]
        ).tolist()  # one device sync for all diagnostics
        batch.diagnostics.update(dict(zip(CENTROID_DIAGNOSTICS, values, strict=True)))
