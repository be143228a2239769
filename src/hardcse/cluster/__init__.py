"""The modified K-means state of ClusterNS (centroids, start trigger, assignment, update)."""

from hardcse.cluster.kmeans import ClusterState, ClusterStep

__all__ = ["ClusterState", "ClusterStep"]
