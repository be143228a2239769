"""STS evaluation inside sentence-transformers' trainer (checkpoint selection on STS-B dev)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.evaluation.evaluator import BaseEvaluator

from hardcse.data.pairs import PairSet
from hardcse.data.sts import DISPLAY_NAMES, METRIC_NAMES, canonical_split, load_tasks
from hardcse.evaluation.encoding import DEFAULT_BATCH_SIZE
from hardcse.evaluation.scoring import check_aggregation, resolve_tasks
from hardcse.evaluation.sts import score_tasks

logger = logging.getLogger(__name__)


class STSEvaluator(BaseEvaluator):
    """STS evaluation during training (a sentence-transformers evaluator), scored like
    :func:`hardcse.evaluation.sts.evaluate_model`.

    Default: STS-B dev, reported as ``{"stsb_spearman": value}`` (Spearman x 100), which the
    trainer logs as ``eval_stsb_spearman``; ``primary_metric`` is set so
    ``metric_for_best_model="eval_stsb_spearman"`` selects checkpoints (greater is better).
    With several tasks each gets ``{name}_{task}_spearman`` and ``{name}_spearman`` is their
    mean (the primary metric). The pairs are read once, when the evaluator is built.

    ``pair_set`` (a :class:`hardcse.data.pairs.PairSet`: the user's own pairs or a built-in
    domain's dev split) replaces the tasks: it alone is scored, under ``name`` (default ``dev``).
    """

    def __init__(
        self,
        tasks: Sequence[str] = ("STSBenchmark",),
        split: str = "dev",
        data_dir: str | Path | None = None,
        name: str | None = None,
        aggregation: str = "all",
        batch_size: int = DEFAULT_BATCH_SIZE,
        show_progress: bool = False,
        fused_kernels: bool = True,
        pair_set: PairSet | None = None,
    ) -> None:
        super().__init__()
        self.fused_kernels = fused_kernels
        self.split = canonical_split(split)
        self.aggregation = check_aggregation(aggregation)
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.pair_set = pair_set
        if pair_set is not None:
            self.tasks = [pair_set.name]
            self.data = {pair_set.name: {self.split: pair_set.pairs}}
            name = "dev" if name is None else name
        else:
            self.tasks = resolve_tasks(list(tasks), self.split)
            self.data = load_tasks(self.tasks, data_dir, self.split)
        if name is None:
            name = METRIC_NAMES[self.tasks[0]] if len(self.tasks) == 1 else "sts"
        self.name = name
        self.primary_metric = f"{name}_spearman" if name else "spearman"
        self.greater_is_better = True

    def __call__(
        self, model: SentenceTransformer, output_path: str | None = None, epoch: int = -1, steps: int = -1
    ) -> dict[str, float]:
        """Score ``model``; returns the metrics dict (Spearman x 100)."""
        results = score_tasks(
            model, self.data, self.aggregation, self.batch_size, self.show_progress, fused_kernels=self.fused_kernels
        )
        prefix = f"{self.name}_" if self.name else ""
        metrics: dict[str, float] = {}
        if len(self.tasks) > 1:
            for task in self.tasks:
                metrics[f"{prefix}{METRIC_NAMES[task]}_spearman"] = results[task]["spearman"]
            metrics[self.primary_metric] = float(np.mean([results[t]["spearman"] for t in self.tasks]))
        else:
            metrics[self.primary_metric] = results[self.tasks[0]]["spearman"]
        logger.info(
            "STS evaluation (%s, %s) at epoch %s step %s: %s",
            ", ".join(DISPLAY_NAMES.get(t, t) for t in self.tasks),
            self.split,
            epoch,
            steps,
            ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()),
        )
        try:
            self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        except Exception:  # a model without model-card data must not break evaluation
            logger.debug("could not store STS metrics in the model card data", exc_info=True)
        return metrics

    @property
    def description(self) -> str:
        return "Semantic Similarity (STS)"

    def get_config_dict(self) -> dict[str, Any]:
        if self.pair_set is not None:
            return {"pairs": self.pair_set.name, "source": self.pair_set.source}
        return {"tasks": self.tasks, "split": self.split, "aggregation": self.aggregation}
