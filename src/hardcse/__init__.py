"""hardcse: unsupervised contrastive sentence embeddings with hard positives and negatives."""

from __future__ import annotations

__version__ = "0.1.0"
