"""HSimCSE: an adversarial hard positive and dual (in-batch + corpus) hard negatives, as parts.

HSimCSE (IJCNN 2023, official code ``xubodhu/HSimCSE``) adds one auxiliary term
to the SimCSE InfoNCE of :mod:`hardcse.objectives.base`:

.. math::

    \\mathcal L = \\mathcal L_{\\text{SimCSE}} + \\lambda\\,\\frac1N\\sum_i
        \\max\\big(0,\\; w_b\\, m_i + w_c\\, q_i - p_i + \\mu\\big)

with, for anchor ``i`` (view 1 ``z_i``, view 2 ``z'_i``, unscaled cosines ``s``), each from a part
that :func:`build_hsimcse` injects (:mod:`hardcse.objectives.parts`):

* ``p_i = s(z_i, \\hat z_i)``: the adversarial positive
  (:class:`~hardcse.objectives.parts.adversarial.AdversarialPositive`, stage ``positive``),
  ``\\hat z = sg(a + \\epsilon \\nabla_a \\mathcal L_{adv}(a))``, ``a = z' + u``, ``u`` a random
  unit vector per row, ``\\mathcal L_{adv}(a) = \\frac1N\\sum_i -\\log \\operatorname{softmax}_j
  (s(a_i, z_j)/\\tau)_i`` (raw gradient, one ascent step, detached);
* ``m_i = max_{j != i} s(z_i, z'_j)``: the in-batch hardest negative
  (:class:`~hardcse.objectives.parts.in_batch.HardestInBatchNegative`, stage ``negative``, with
  gradient);
* ``q_i = s(z_i, \\bar n_i)``: the corpus hard negative
  (:class:`~hardcse.objectives.parts.corpus_index.CorpusIndexNegative`, stage ``negative``),
  ``\\bar n_i`` the mean of the stored vectors of the top-3 of the 7 corpus neighbours of the
  detached fp32 query ``z_i`` (inner-product search in a :class:`~hardcse.index.CorpusIndex`), the
  sentence itself and its exact duplicates excluded;
* the hinge itself: :class:`~hardcse.objectives.parts.quadruplet.QuadrupletHinge` (stage
  ``term``, loss ``quad``), which reads the three from the batch's slots.

Official constants (all hard-coded there, fields of :class:`HSimCSEConfig`
here): ``epsilon = 3.0``, 1 ascent step, ``k = 7``, top-3 mean, ``w_b = 0.9``, ``w_c = 0.11``,
``lambda = 0.22``, ``mu = 0``, ``tau = 0.05``; the bank is the *untrained* backbone's
L2-normalised raw ``[CLS]`` (no MLP head, no dropout), exact inner-product FAISS, built once.

Differences from the official code, on purpose (each explained in its part's module): self-exclusion
by corpus row and duplicate text works; ``index_mode="refresh"`` re-encodes the bank in the
queries' space every ``refresh_steps`` steps; it works under DDP (gathered global batch, one full
index per process); the random offset comes from a generator seeded by ``(seed, step)``, with
``seed`` defaulting to the run's ``--seed`` (:meth:`HSimCSEConfig.seed_for`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from sentence_transformers import SentenceTransformer

from hardcse.errors import ConfigError
from hardcse.objectives.base import Part
from hardcse.objectives.citations import HSIMCSE_CITATION
from hardcse.objectives.parts.adversarial import ADV_INITS, AdversarialPositive
from hardcse.objectives.parts.corpus_index import CorpusIndexConfig, CorpusIndexNegative, build_corpus_index
from hardcse.objectives.parts.in_batch import HardestInBatchNegative
from hardcse.objectives.parts.quadruplet import QuadrupletHinge
from hardcse.objectives.registry import WIKI1M, BuildContext, Built, Method, StepHook
from hardcse.objectives.seeds import method_seed


@dataclass
class HSimCSEConfig:
    """Every constant of HSimCSE; the defaults are the official code's.

    Adversarial positive: ``adv_step`` (epsilon, raw-gradient ascent step), ``adv_init``
    (``unit_uniform``: uniform(-0.5, 0.5) per dim then unit L2 norm per row, as official;
    ``unit_gaussian``: a uniform direction on the sphere; ``zero``: no random offset),
    ``adv_iters`` (ascent steps). Corpus negative: ``k`` neighbours, mean of the ``top_mean``
    best. Hinge: ``w_inbatch``, ``w_corpus``, ``margin``; loss weight ``quad_weight``.
    Index: ``index_mode`` (``official``: untrained backbone's raw [CLS], built once;
    ``refresh``: the current model with its head, rebuilt every ``refresh_steps`` optimisation
    steps), ``index_kind`` (``flat`` exact, ``ivf``, ``hnsw``) with ``nlist``/``nprobe`` (IVF)
    and ``hnsw_m``/``ef_construction``/``ef_search`` (HNSW), ``exclude_self`` (drop the
    sentence and its exact duplicates from its neighbours), ``seed`` (random offsets, IVF, bank
    sample; ``None``, the default, takes the run's ``--seed``, see :meth:`seed_for`).
    ``bank_size``: ``None`` (official) indexes the whole training corpus; a number indexes a
    fixed random sample of that many corpus sentences (drawn with ``seed``), which bounds the
    cost of encoding the bank (see :data:`CPU_HSIMCSE`).
    """

    adv_step: float = 3.0
    adv_init: str = "unit_uniform"
    adv_iters: int = 1
    k: int = 7
    top_mean: int = 3
    w_inbatch: float = 0.9
    w_corpus: float = 0.11
    quad_weight: float = 0.22
    margin: float = 0.0
    index_mode: str = "official"
    refresh_steps: int = 50
    index_kind: str = "flat"
    nlist: int | None = None
    nprobe: int = 16
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 64
    exclude_self: bool = True
    seed: int | None = None
    bank_size: int | None = None

    def seed_for(self, run_seed: int | None = None) -> int:
        """The seed used: ``seed`` when set, else ``run_seed``, else 42 (the official script's)."""
        return method_seed(self.seed, run_seed)

    def corpus_index(self) -> CorpusIndexConfig:
        """The settings of the corpus index miner (the index fields of this config)."""
        return CorpusIndexConfig(**{f.name: getattr(self, f.name) for f in fields(CorpusIndexConfig)})

    def validate(self) -> None:
        """Raise :class:`~hardcse.errors.ConfigError` for an impossible combination."""
        if self.adv_init not in ADV_INITS:
            raise ConfigError(f"unknown hsimcse adv_init '{self.adv_init}'; choose one of {', '.join(ADV_INITS)}.")
        if self.adv_iters < 0:
            raise ConfigError(f"hsimcse adv_iters must be 0 or more, got {self.adv_iters}.")
        self.corpus_index().validate("hsimcse")


# -- presets ---------------------------------------------------------------------------------
# Includes ``seed: None`` (the run's seed), written out in every saved config.yaml; configs saved
# before method seeds followed the run seed say ``seed: 42`` there.
_OFFICIAL = asdict(HSimCSEConfig())

#: The official script (``run_unsup_example.sh``): roberta-base, batch 64, lr 2e-5, 1 epoch,
#: max length 32, tau 0.05, CLS + train-only MLP, eval/save every 125 steps, fp16, seed 42, and
#: the hard-coded HSimCSE constants. Selection is on STS-B dev here (the official code selects on
#: the test sets). Checkpoints are saved at every evaluation (125 steps).
HSIMCSE_PRESETS: dict[str, dict[str, Any]] = {
    "hsimcse-roberta-base": {
        "model": "roberta-base",
        "pooling": "cls",
        "mlp_head": True,
        "max_seq_length": 32,
        "batch_size": 64,
        "lr": 2e-5,
        "epochs": 1.0,
        "temperature": 0.05,
        "eval_steps": 125,
        "fp16": True,
        "seed": 42,
        "hsimcse": dict(_OFFICIAL),
    }
}

#: The ``cpu`` preset's HSimCSE settings: the official constants and the official (frozen,
#: exact) bank, over a 4,096-sentence sample of the corpus. Encoding all 36k sentences of the
#: default corpus with all-MiniLM-L6-v2 takes ~3.5 min on 2 idle CPU cores (176
#: sentences/s), ~40% of a 250-step run that only sees 16k sentences; 4,096 sentences take
#: ~23 s (~4%). With ``index_mode: refresh`` a 250-step run rebuilds once, at step 125 (a
#: refresh due at the last step is skipped). The paper preset indexes the whole corpus.
CPU_HSIMCSE: dict[str, Any] = {**_OFFICIAL, "refresh_steps": 125, "bank_size": 4096}


# -- assembly --------------------------------------------------------------------------------
def hsimcse_parts(config: HSimCSEConfig, corpus: CorpusIndexNegative) -> list[Part]:
    """The four HSimCSE parts around the corpus index miner ``corpus``, in recipe order: the
    adversarial positive (seed ``config.seed_for(None)``), the hardest in-batch negative, ``corpus``
    and the quadruplet hinge that reads the three."""
    config.validate()
    return [
        AdversarialPositive(config.adv_step, config.adv_init, config.adv_iters, config.seed_for(None)),
        HardestInBatchNegative(),
        corpus,
        QuadrupletHinge(config.quad_weight, config.w_inbatch, config.w_corpus, config.margin),
    ]


def build_hsimcse(
    config: HSimCSEConfig,
    model: SentenceTransformer,
    corpus: list[str],
    batch_size: int = 128,
    show_progress: bool = True,
    run_seed: int | None = None,
) -> tuple[list[Part], list[StepHook]]:
    """The HSimCSE parts (:func:`hsimcse_parts`) and their step hooks, for ``model`` trained on ``corpus``.

    Call it **before** training with the freshly built (untrained) model; ``corpus[i]`` must be
    the sentence whose dataset ``label`` is ``i``. ``run_seed`` (the run's ``--seed``) seeds the
    random offsets, the bank sample and the IVF training unless ``config.seed`` is set. All three
    are functions of the seed (and step) only, so a resumed run draws them again exactly without
    saved RNG state. The corpus index is built by
    :func:`~hardcse.objectives.parts.corpus_index.build_corpus_index` (``official`` mode: encoded
    here; ``refresh`` mode: by the returned :class:`~hardcse.objectives.parts.corpus_index.IndexRefreshHook`
    when training begins and every ``refresh_steps`` steps).
    """
    config.validate()
    config = replace(config, seed=config.seed_for(run_seed))
    miner, hooks = build_corpus_index(
        config.corpus_index(), model, corpus, batch_size=batch_size, show_progress=show_progress, owner="hsimcse"
    )
    return hsimcse_parts(config, miner), hooks


def build(config: HSimCSEConfig, context: BuildContext) -> Built:
    """The registry's build step: :func:`build_hsimcse` on the run's model and corpus."""
    parts, hooks = build_hsimcse(
        config,
        context.model,
        list(context.sentences),
        batch_size=context.encode_batch_size,
        show_progress=context.show_progress,
        run_seed=context.run_seed,
    )
    return Built(parts=parts, hooks=hooks)


METHOD = Method(
    name="hsimcse",
    config_class=HSimCSEConfig,
    build=build,
    cpu_settings=CPU_HSIMCSE,
    presets={
        name: {"recipe": "hsimcse", "corpus": [WIKI1M], "steps": None, **values}
        for name, values in HSIMCSE_PRESETS.items()
    },
    # No comparable published figure (the official code selects checkpoints on the test sets).
    published={"hsimcse-roberta-base": None},
    citation=HSIMCSE_CITATION,
    title="HSimCSE",
    summary="an adversarial hard positive and in-batch + corpus (faiss) hard negatives in a quadruplet hinge",
)
