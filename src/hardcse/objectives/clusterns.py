"""ClusterNS: clustering-aware negative sampling (Deng et al., Findings of ACL 2023), as parts.

A modified K-means (:class:`hardcse.cluster.ClusterState`) runs over the view-1 vectors during
training. Once it has started (batch-mean cosine ``<= theta``), the loss is

.. math::

    \\mathcal L = \\frac1N \\sum_i -\\log \\frac{e^{S_{ii}/\\tau}}
        {\\sum_j e^{S_{ij}/\\tau} + \\sum_k e^{w 1[k=i]} e^{s(z_i, \\tilde c_k)/\\tau}}
        + \\lambda \\mathcal L_{BML},

    \\mathcal L_{BML} = \\frac1{N^2} \\sum_{i,j} \\max(0, \\Delta_{ij} + \\alpha)
        + \\max(0, -\\Delta_{ij} - \\beta), \\qquad \\Delta_{ij} = M_{ij} (S_{ij} - S_{ii}),

with ``S = cos(z, z')`` unscaled, ``c~_k`` the (detached) second-nearest centroid of sample k
(every row sees all N of them, as the official code), ``M`` the same-cluster mask of the
view-1 vectors (zero diagonal) and BML the bidirectional margin loss of SNCSE. Before the start
(and on the start step) the loss is plain SimCSE.

The method is a recipe of parts (:mod:`hardcse.objectives.parts`), injected by :func:`build_clusterns`
according to the config:

* :class:`~hardcse.objectives.parts.centroids.CentroidNegatives` (stage ``negative``): the
  cluster state machine, the centroid columns (``hard_negatives``; log-weight ``w =
  hard_negative_weight``) and the same-cluster mask, published as the batch's false negatives;
* :class:`~hardcse.objectives.parts.false_negatives.MaskFalseNegatives` (stage
  ``false_negative``) when ``false_negatives`` is ``mask`` or ``both``;
* :class:`~hardcse.objectives.parts.false_negatives.BidirectionalMarginLoss` (stage
  ``false_negative``): loss ``bml`` when ``false_negatives`` is ``bml`` or ``both`` and
  ``bml_weight > 0``; otherwise with weight 0, so the unweighted BML is still logged as the
  diagnostic ``bml`` in every mode (:data:`DIAGNOSTIC_KEYS`).

Defaults are the official code's (``train.py``: K=128, theta=0.4, eta=1e-3, momentum update,
lambda=1e-4, alpha=0.2, beta=0.5, w=0); :data:`CLUSTERNS_PRESETS` holds the README table per
backbone. Options beyond the official code (defaults reproduce it): ``false_negatives`` ("mask"
removes same-cluster in-batch columns from the InfoNCE denominator instead of BML, "both" does
both), ``bml_normalize="masked"`` (mean over the masked pairs only), ``centroid_update="mean"``,
``reinit_empty``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from hardcse.cluster.kmeans import CENTROID_UPDATES, UPDATE_RULES, ClusterState, too_few_sentences_message
from hardcse.errors import ConfigError
from hardcse.objectives.base import Part
from hardcse.objectives.citations import CLUSTERNS_CITATION
from hardcse.objectives.parts.centroids import CENTROID_DIAGNOSTICS, CentroidNegatives
from hardcse.objectives.parts.false_negatives import BML_NORMALIZATIONS, BidirectionalMarginLoss, MaskFalseNegatives
from hardcse.objectives.registry import WIKI1M, BuildContext, Built, Method
from hardcse.objectives.seeds import method_seed

FALSE_NEGATIVE_MODES = ("bml", "mask", "both")


@dataclass
class ClusterNSConfig:
    """Every ClusterNS hyperparameter; defaults are the official code's (``train.py``).

    Attributes:
        k: number of clusters K (``--kmeans``), at most the global batch size.
        theta: start clustering at the first step whose batch-mean cosine is ``<= theta``
            (``--kmean_cosine``).
        eta: centroid momentum (``--kmeans_lr``).
        update_rule: ``"momentum"`` (official) or ``"kmeans"`` (``--kmeans_optim``).
        hard_negatives: append the N centroid hard-negative columns once clustering runs
            (always on in the non-prompt code; ``--enable_hardneg`` in the prompt code).
        hard_negative_weight: log-weight w on each row's own hard negative (official 0).
        bml_weight: lambda, the weight of the BML term (0 disables it).
        bml_alpha: alpha, lower margin of BML.
        bml_beta: beta, upper margin of BML.
        false_negatives: ``"bml"`` (official), ``"mask"`` (drop same-cluster columns from the
            InfoNCE denominator, no BML) or ``"both"``.
        bml_normalize: ``"all"`` (official: mean over all N^2 entries) or ``"masked"`` (mean
            over the masked pairs only, 0 when there are none).
        centroid_update: ``"sum"`` (official) or ``"mean"`` of the assigned points.
        reinit_empty: re-initialise clusters that received no point for ``reinit_patience``
            consecutive steps from the batch points farthest from their centroid.
        reinit_patience: see ``reinit_empty``.
        seed: seed of the random first centroid (mixed with the step, identical on all ranks);
            ``None`` (default) takes the run's seed (``--seed``), so runs of several seeds also
            differ in this draw; :meth:`seed_for` resolves it.
    """

    k: int = 128
    theta: float = 0.4
    eta: float = 1e-3
    update_rule: str = "momentum"
    hard_negatives: bool = True
    hard_negative_weight: float = 0.0
    bml_weight: float = 1e-4
    bml_alpha: float = 0.2
    bml_beta: float = 0.5
    false_negatives: str = "bml"
    bml_normalize: str = "all"
    centroid_update: str = "sum"
    reinit_empty: bool = False
    reinit_patience: int = 100
    seed: int | None = None

    def validate(self) -> None:
        """Raise :class:`ConfigError` (one sentence) for an invalid value."""
        choices = {
            "update_rule": (self.update_rule, UPDATE_RULES),
            "false_negatives": (self.false_negatives, FALSE_NEGATIVE_MODES),
            "bml_normalize": (self.bml_normalize, BML_NORMALIZATIONS),
            "centroid_update": (self.centroid_update, CENTROID_UPDATES),
        }
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise ConfigError(f"unknown ClusterNS {name} '{value}'; choose one of {', '.join(allowed)}.")
        minimum = 2 if self.hard_negatives else 1
        if self.k < minimum:
            why = " (the hard negative is the second-nearest centroid)" if self.hard_negatives else ""
            raise ConfigError(f"ClusterNS needs K >= {minimum}{why}, got K={self.k}; raise --set clusterns.k=K.")
        if not 0.0 <= self.eta <= 1.0:
            raise ConfigError(f"the ClusterNS momentum eta must be in [0, 1], got {self.eta}.")
        if self.bml_weight < 0:
            raise ConfigError(f"the ClusterNS BML weight must be >= 0, got {self.bml_weight}.")
        if self.reinit_patience < 1:
            raise ConfigError(f"ClusterNS reinit_patience must be at least 1 step, got {self.reinit_patience}.")

    def seed_for(self, run_seed: int | None = None) -> int:
        """The seed used: ``seed`` when set, else ``run_seed``, else 42 (the official code's)."""
        return method_seed(self.seed, run_seed)

    @property
    def uses_bml(self) -> bool:
        return self.bml_weight > 0 and self.false_negatives in ("bml", "both")

    @property
    def uses_mask(self) -> bool:
        return self.false_negatives in ("mask", "both")

    def to_dict(self) -> dict:
        return asdict(self)


#: The diagnostics ClusterNS records every step, in this order: the centroid miner's, then ``bml``.
DIAGNOSTIC_KEYS = (*CENTROID_DIAGNOSTICS, "bml")


def clusterns_parts(config: ClusterNSConfig, dim: int, batch_size: int | None = None) -> list[Part]:
    """The parts ``config`` asks for (module doc), for vectors of dimension ``dim`` and a global
    batch of ``batch_size`` sentences; the first-centroid seed is ``config.seed_for(None)``."""
    config.validate()
    cluster = ClusterState(
        k=config.k,
        dim=dim,
        theta=config.theta,
        eta=config.eta,
        update_rule=config.update_rule,
        centroid_update=config.centroid_update,
        reinit_empty=config.reinit_empty,
        reinit_patience=config.reinit_patience,
        seed=config.seed_for(None),
        batch_size=batch_size,
    )
    parts: list[Part] = [
        CentroidNegatives(cluster, columns=config.hard_negatives, log_weight=config.hard_negative_weight)
    ]
    if config.uses_mask:
        parts.append(MaskFalseNegatives())
    weight = config.bml_weight if config.uses_bml else 0.0  # 0: the diagnostic only
    parts.append(BidirectionalMarginLoss(weight, config.bml_alpha, config.bml_beta, config.bml_normalize))
    return parts


def validate_batch_size(config: ClusterNSConfig, batch_size: int) -> None:
    """Raise :class:`ConfigError` if the global batch cannot hold K sentences."""
    if batch_size < config.k:
        raise ConfigError(too_few_sentences_message(config.k, batch_size))


def build_clusterns(config: ClusterNSConfig, dim: int, batch_size: int, run_seed: int | None = None) -> list[Part]:
    """The ClusterNS parts (:func:`clusterns_parts`) for vectors of dimension ``dim`` and a
    *global* batch of ``batch_size`` sentences (per-device batch x processes); checks K <= batch size.

    ``run_seed`` (the training run's ``--seed``) becomes the seed of the first-centroid draw
    unless ``config.seed`` is set. The draw is a function of (seed, step) only, so a resumed run
    re-draws it exactly without saved RNG state.
    """
    config.validate()
    validate_batch_size(config, batch_size)
    config = replace(config, seed=config.seed_for(run_seed))
    return clusterns_parts(config, dim=dim, batch_size=batch_size)


def _preset(model: str, batch_size: int, lr: float, **clusterns) -> dict:
    # ``seed: None`` is written out so a saved config.yaml says "the run's seed" explicitly
    # (a ClusterNS config saved before method seeds followed the run seed has no key: 42).
    return {
        "model": model,
        "batch_size": batch_size,
        "lr": lr,
        "epochs": 1,
        "max_seq_length": 32,
        "eval_steps": 125,
        "early_stopping": 3,
        "fp16": True,
        "clusterns": {"hard_negatives": True, "seed": None, **clusterns},
    }


#: The README hyperparameter table of djz233/ClusterNS (non-prompt). Batch
#: sizes are global ("128*4" = 512). RoBERTa-large leaves alpha/beta blank with lambda = 0
#: (BML off, centroid hard negatives only): the code defaults are kept for them.
CLUSTERNS_PRESETS: dict[str, dict] = {
    "clusterns-bert-base": _preset(
        "bert-base-uncased", 256, 5e-5,
        k=128, eta=1e-3, theta=0.4, bml_weight=1e-3, bml_alpha=0.0, bml_beta=0.3,
    ),
    "clusterns-bert-large": _preset(
        "bert-large-uncased", 512, 5e-5,
        k=128, eta=1e-3, theta=0.5, bml_weight=5e-5, bml_alpha=0.25, bml_beta=0.3,
    ),
    "clusterns-roberta-base": _preset(
        "roberta-base", 512, 5e-5,
        k=128, eta=1e-3, theta=0.4, bml_weight=1e-4, bml_alpha=0.2, bml_beta=0.5,
    ),
    "clusterns-roberta-large": _preset(
        "roberta-large", 512, 5e-5,
        k=128, eta=5e-4, theta=0.4, bml_weight=0.0, bml_alpha=0.2, bml_beta=0.5,
    ),
}  # fmt: skip


def _prompt_preset(model: str, batch_size: int, lr: float, **clusterns) -> dict:
    # Prompt ClusterNS (train_prompt.py): the [MASK] state of the templated sentence, template
    # denoising in training, the two templates run_prompt.sh ends up with (hardcse.models.prompt).
    from hardcse.models.templates import PROMPT_TEMPLATE, PROMPT_TEMPLATE2

    return {
        **_preset(model, batch_size, lr, **clusterns),
        "prompt": True,
        "prompt_template": PROMPT_TEMPLATE,
        "prompt_template2": PROMPT_TEMPLATE2,
        "prompt_denoise": True,
    }


#: Prompt-based ClusterNS. ``clusterns-prompt-bert-base`` is what the official
#: ``run_prompt.sh`` does by default, not the README column, which disagrees with it (README: K=96,
#: eta=5e-4, lambda=1e-2, alpha=0, beta=0.2); the script assigns the BERT templates and then the
#: RoBERTa-style ones, so its BERT run uses the RoBERTa-style templates, and so do these presets.
#: BERT-large and RoBERTa-base have no script: their README columns (hard negatives off for
#: RoBERTa-base, ``--enable_hardneg`` not passed).
CLUSTERNS_PROMPT_PRESETS: dict[str, dict] = {
    "clusterns-prompt-bert-base": _prompt_preset(
        "bert-base-uncased", 512, 5e-5,
        k=128, eta=1e-3, theta=0.4, bml_weight=1e-5, bml_alpha=0.1, bml_beta=0.3,
    ),
    "clusterns-prompt-bert-large": _prompt_preset(
        "bert-large-uncased", 256, 3e-5,
        k=96, eta=1e-4, theta=0.2, bml_weight=5e-4, bml_alpha=0.25, bml_beta=0.3,
    ),
    "clusterns-prompt-roberta-base": _prompt_preset(
        "roberta-base", 512, 5e-5,
        k=128, eta=1e-3, theta=0.4, hard_negatives=False, bml_weight=1e-2, bml_alpha=0.2, bml_beta=0.6,
    ),
}  # fmt: skip

#: ClusterNS settings of the ``cpu`` variant (global batch 64, default model all-MiniLM-L6-v2).
#:
#: * K = 32 keeps the official BERT-base ratio of N/K = 2 sentences per cluster per batch
#:   (256/128), so the share of same-cluster pairs and hence the N^2-diluted BML strength that
#:   lambda/alpha/beta were tuned for stay comparable, while leaving most clusters non-empty
#:   in a batch and giving same-cluster pairs in every batch; K must not exceed the batch (64).
#: * theta = 0.4 (official). The batch-mean cosine of the CLS + fresh-MLP views of
#:   all-MiniLM-L6-v2 on the Wikipedia vital-articles corpus is about 0.57 at step 0 (8 batches
#:   of 64: 0.555-0.576), above 0.4, so clustering does not start at step 0; SimCSE training at
#:   lr 5e-5 brings it under 0.4 within a few steps (0.58, 0.53, 0.46, 0.37 in steps 0-3 of a
#:   measured run), so clustering still starts early, after the space has begun to spread out,
#:   which is the official trigger's intent.
#: * eta, lambda, alpha, beta from the BERT-base column of the README table.
#: * seed None: the first-centroid draw follows the run's ``--seed`` (written out, see ``_preset``).
CPU_CLUSTERNS: dict = {
    "k": 32,
    "theta": 0.4,
    "eta": 1e-3,
    "hard_negatives": True,
    "bml_weight": 1e-3,
    "bml_alpha": 0.0,
    "bml_beta": 0.3,
    "seed": None,
}


def build(config: ClusterNSConfig, context: BuildContext) -> Built:
    """The registry's build step: :func:`build_clusterns` for the run's global batch and seed."""
    parts = build_clusterns(config, dim=context.dim, batch_size=context.global_batch, run_seed=context.run_seed)
    return Built(parts=parts)


METHOD = Method(
    name="clusterns",
    config_class=ClusterNSConfig,
    build=build,
    cpu_settings=CPU_CLUSTERNS,
    presets={
        name: {"recipe": "clusterns", "corpus": [WIKI1M], "steps": None, **values}
        for name, values in {**CLUSTERNS_PRESETS, **CLUSTERNS_PROMPT_PRESETS}.items()
    },
    # The seven-task STS averages of the paper / official README ("all" aggregation).
    published={
        "clusterns-bert-base": 77.55,
        "clusterns-bert-large": 79.19,
        "clusterns-roberta-base": 77.98,
        "clusterns-roberta-large": 79.43,
        "clusterns-prompt-bert-base": 78.72,
        "clusterns-prompt-bert-large": 80.30,
        "clusterns-prompt-roberta-base": 79.74,
    },
    check_batch=validate_batch_size,
    citation=CLUSTERNS_CITATION,
    title="ClusterNS",
    summary="clustering-aware negatives: centroid hard negatives and a bidirectional margin loss on false negatives",
)
