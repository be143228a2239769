"""HSimCSE: an adversarial hard positive and dual (in-batch + corpus) hard negatives.

HSimCSE (IJCNN 2023, official code ``xubodhu/HSimCSE``) adds one auxiliary term
to the SimCSE InfoNCE of :mod:`hardcse.objectives.base`:

.. math::

    \\mathcal L = \\mathcal L_{\\text{SimCSE}} + \\lambda\\,\\frac1N\\sum_i
        \\max\\big(0,\\; w_b\\, m_i + w_c\\, q_i - p_i + \\mu\\big)

with, for anchor ``i`` (view 1 ``z_i``, view 2 ``z'_i``, unscaled cosines ``s``):

* ``m_i = max_{j != i} s(z_i, z'_j)``: the in-batch hardest negative
  (:class:`InBatchHardestNegative`, with gradient);
* ``p_i = s(z_i, \\hat z_i)``: the adversarial positive (:class:`AdversarialPositive`),
  ``\\hat z = sg(a + \\epsilon \\nabla_a \\mathcal L_{adv}(a))``, ``a = z' + u``, ``u`` a random
  unit vector per row, ``\\mathcal L_{adv}(a) = \\frac1N\\sum_i -\\log \\operatorname{softmax}_j
  (s(a_i, z_j)/\\tau)_i`` (raw gradient, one ascent step, detached);
* ``q_i = s(z_i, \\bar n_i)``: the corpus hard negative (:class:`CorpusNegative`), ``\\bar n_i``
  the mean of the stored vectors of the top-3 of the 7 corpus neighbours of the detached fp32
  query ``z_i`` (inner-product search in a :class:`~hardcse.index.CorpusIndex`), the sentence
  itself and its exact duplicates excluded.

Official constants (all hard-coded there, fields of :class:`HSimCSEConfig`
here): ``epsilon = 3.0``, 1 ascent step, ``k = 7``, top-3 mean, ``w_b = 0.9``, ``w_c = 0.11``,
``lambda = 0.22``, ``mu = 0``, ``tau = 0.05``; the bank is the *untrained* backbone's
L2-normalised raw ``[CLS]`` (no MLP head, no dropout), exact inner-product FAISS, built once.

Differences from the official code, on purpose:

* self-exclusion works: by corpus row id and exact-duplicate text (the official token-id
  comparison is misaligned and never fires for RoBERTa);
* ``index_mode="refresh"`` re-encodes the bank in the queries' space (head applied, dropout
  off) every ``refresh_steps`` optimisation steps (:class:`IndexRefreshHook`, a step hook the
  trainer runs), instead of keeping the frozen initial space;
* it works under DDP: the quadruplet terms use the gathered global batch and every process
  holds the same full index (the official code only runs on one GPU);
* the random offset comes from a generator seeded by ``(seed, step)``, so a step is
  reproducible (the official code draws from the global RNG); ``seed`` defaults to the run's
  ``--seed`` (:meth:`HSimCSEConfig.seed_for`), so runs of several seeds differ in it too.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from torch import Tensor, nn

from hardcse.errors import ConfigError
from hardcse.index.bank import INDEX_KINDS, CorpusIndex, duplicate_groups
from hardcse.models.corpus_encoding import encode_corpus
from hardcse.numeric import pairwise_cosine
from hardcse.objectives.base import ContrastiveBatch, Part
from hardcse.objectives.registry import WIKI1M, BuildContext, Built, Method, StepHook, StepInfo

logger = logging.getLogger(__name__)

ADV_INITS = ("unit_uniform", "unit_gaussian", "zero")
INDEX_MODES = ("official", "refresh")
#: The method seed when neither the method nor the run names one (the official script's seed).
DEFAULT_SEED = 42


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
        if self.seed is not None:
            return int(self.seed)
        return int(run_seed) if run_seed is not None else DEFAULT_SEED

    def validate(self) -> None:
        """Raise :class:`~hardcse.errors.ConfigError` for an impossible combination."""
        if self.adv_init not in ADV_INITS:
            raise ConfigError(f"unknown hsimcse adv_init '{self.adv_init}'; choose one of {', '.join(ADV_INITS)}.")
        if self.index_mode not in INDEX_MODES:
            raise ConfigError(
                f"unknown hsimcse index_mode '{self.index_mode}'; choose one of {', '.join(INDEX_MODES)}."
            )
        if self.index_kind not in INDEX_KINDS:
            raise ConfigError(
                f"unknown hsimcse index_kind '{self.index_kind}'; choose one of {', '.join(INDEX_KINDS)}."
            )
        if self.adv_iters < 0:
            raise ConfigError(f"hsimcse adv_iters must be 0 or more, got {self.adv_iters}.")
        if self.k < 1:
            raise ConfigError(f"hsimcse k must be at least 1, got {self.k}.")
        if not 1 <= self.top_mean <= self.k:
            raise ConfigError(f"hsimcse top_mean must be between 1 and k={self.k}, got {self.top_mean}.")
        if self.index_mode == "refresh" and self.refresh_steps < 1:
            raise ConfigError(f"hsimcse refresh_steps must be at least 1, got {self.refresh_steps}.")
        if self.bank_size is not None and self.bank_size < 1:
            raise ConfigError(
                f"hsimcse bank_size must be at least 1 (or null: the whole corpus), got {self.bank_size}."
            )
        if self.nprobe < 1 or self.hnsw_m < 2 or self.ef_search < 1 or self.ef_construction < 1:
            raise ConfigError("hsimcse nprobe, ef_search and ef_construction must be >= 1 and hnsw_m >= 2.")


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


# -- the adversarial positive ----------------------------------------------------------------
def _step_seed(seed: int, step: int) -> int:
    """A well-mixed 63-bit seed for ``(seed, step)``."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(step) & 0xFFFFFFFF]).generate_state(1, np.uint64)
    return int(state[0]) >> 1


def adversarial_loss(a: Tensor, z1: Tensor, temperature: float) -> Tensor:
    """``L_adv(a) = mean_i CE(s(a_i, z_j)/tau over j, label i)`` (a: anchors, z1: candidates)."""
    logits = pairwise_cosine(a, z1) / temperature
    labels = torch.arange(a.shape[0], device=a.device)
    return F.cross_entropy(logits, labels)


class AdversarialPositive(nn.Module):
    """``\\hat z = sg(a + epsilon * grad_a L_adv(a))``, ``a = z' + u``.

    ``u`` is a random offset per row (``unit_uniform``: ``v / (||v|| + 1e-8)`` with ``v`` uniform
    in (-0.5, 0.5)^d, as the official ``_l2_normalize``), drawn from a CPU ``torch.Generator``
    seeded by ``(seed, step)``, so it is the same on every process and for every rerun of a step.
    The gradient is the **raw** gradient of :func:`adversarial_loss` (mean reduction, so its
    norm is at most ``2 / (N tau ||a_i||)``), taken with ``torch.autograd.grad`` on detached fp32
    copies of ``z'`` and ``z``: the training graph is untouched and ``z`` is a constant there
    (autocast is switched off for it, so the step is fp32 under fp16 training too).
    ``adv_iters`` ascent steps (official: 1), no projection; the result is detached.
    """

    def __init__(self, step_size: float = 3.0, init: str = "unit_uniform", iters: int = 1, seed: int = 42) -> None:
        super().__init__()
        if init not in ADV_INITS:
            raise ConfigError(f"unknown adversarial init '{init}'; choose one of {', '.join(ADV_INITS)}.")
        self.step_size = float(step_size)
        self.init = init
        self.iters = int(iters)
        self.seed = int(seed)

    def offset(self, shape: tuple[int, ...], step: int, device: torch.device | str = "cpu") -> Tensor:
        """The random offset ``u`` (float32) for training step ``step``."""
        if self.init == "zero":
            return torch.zeros(shape, dtype=torch.float32, device=device)
        gen = torch.Generator().manual_seed(_step_seed(self.seed, step))
        if self.init == "unit_uniform":
            v = torch.rand(shape, generator=gen, dtype=torch.float32).sub_(0.5)
        else:
            v = torch.randn(shape, generator=gen, dtype=torch.float32)
        v = v / (v.norm(dim=-1, keepdim=True) + 1e-8)
        return v.to(device)

    def forward(self, z1: Tensor, z2: Tensor, temperature: float, step: int) -> tuple[Tensor, Tensor]:
        """Return ``(\\hat z, a)`` (both detached float32, N x d) for views ``z1``, ``z2``."""
        anchors = z1.detach().float()
        start = z2.detach().float() + self.offset(tuple(z2.shape), step, z2.device)
        a = start
        # fp32 even inside mixed-precision training (autocast would run the matmul in fp16).
        with torch.enable_grad(), torch.autocast(device_type=z2.device.type, enabled=False):
            for _ in range(self.iters):
                a = a.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(adversarial_loss(a, anchors, temperature), a)
                a = a + self.step_size * grad
        return a.detach(), start


# -- the negatives ---------------------------------------------------------------------------
class InBatchHardestNegative(nn.Module):
    """``m_i = max_{j != i} sim[i, j]``: the hardest in-batch negative's cosine, with gradient."""

    def forward(self, sim: Tensor) -> Tensor:
        eye = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
        return sim.masked_fill(eye, float("-inf")).max(dim=1).values


class CorpusNegative(nn.Module):
    """``\\bar n_i``: mean of the stored vectors of the ``top_mean`` best of ``k`` corpus hits.

    The query is the detached fp32 ``z_i`` (not normalised, as official; the ranking equals the
    cosine ranking because the bank is L2-normalised). With ``exclude_self`` the sentence's own
    row and its exact duplicates are excluded (needs the corpus row ids; ``bank_row`` maps a
    corpus row to the bank row holding the same text, -1 if the bank lacks it). If fewer than
    ``top_mean`` admissible hits exist (tiny corpora), the mean runs over those that exist; a
    row with none gets a zero vector (cosine 0). The result carries no gradient.
    """

    def __init__(
        self,
        index: CorpusIndex,
        k: int = 7,
        top_mean: int = 3,
        exclude_self: bool = True,
        bank_row: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.index = index
        self.bank_row = bank_row
        self.k = int(k)
        self.top_mean = int(top_mean)
        self.exclude_self = exclude_self
        self.last_ids: np.ndarray | None = None
        self.last_scores: np.ndarray | None = None
        self.last_seconds = 0.0

    def forward(self, queries: Tensor, ids: Tensor | None) -> Tensor:
        if self.exclude_self and ids is None:
            raise ConfigError(
                "HSimCSE self-exclusion needs each sentence's corpus row: the training dataset must have "
                "an integer 'label' column holding the row id (or set hsimcse exclude_self to false)."
            )
        started = time.perf_counter()
        exclude = None
        if self.exclude_self:
            exclude = ids.detach().cpu().numpy() if isinstance(ids, Tensor) else np.asarray(ids)
            if self.bank_row is not None:
                exclude = self.bank_row[exclude]
        scores, rows, vectors = self.index.search(queries.detach().float().cpu().numpy(), self.k, exclude)
        top = vectors[:, : self.top_mean]
        count = (rows[:, : self.top_mean] >= 0).sum(axis=1, keepdims=True).clip(min=1)
        mean = top.sum(axis=1) / count.astype(np.float32)
        self.last_seconds = time.perf_counter() - started
        self.last_ids, self.last_scores = rows, scores
        return torch.from_numpy(mean).to(queries.device)


def quadruplet_hinge(
    m: Tensor, q: Tensor, p: Tensor, w_inbatch: float = 0.9, w_corpus: float = 0.11, margin: float = 0.0
) -> Tensor:
    """Per-row hinge ``relu(w_inbatch * m + w_corpus * q - p + margin)`` (official: 0.9, 0.11, 0)."""
    return F.relu(w_inbatch * m + w_corpus * q - p + margin)


# -- the part --------------------------------------------------------------------------------
CITATION = """@inproceedings{hsimcse2023,
  title = {{HSimCSE}: Improving Contrastive Learning of Unsupervised Sentence Representation
           with Adversarial Hard Positives and Dual Hard Negatives},
  booktitle = {International Joint Conference on Neural Networks (IJCNN)},
  year = {2023},
  note = {Authors not recorded in hardcse's sources; code: https://github.com/xubodhu/HSimCSE}
}"""


class HSimCSEPart(Part):
    """The HSimCSE quadruplet term as one part: adds loss ``quad = quad_weight * L_quad``.

    ``L_quad = mean_i relu(w_inbatch m_i + w_corpus q_i - p_i + margin)`` (module docstring).
    Gradient reaches ``z`` through ``m``, ``p`` and ``q`` and ``z'`` through ``m`` only; the
    adversarial positive and the corpus negative are constants. The corpus is searched once
    per step, for the global (gathered) batch; under DDP every process searches the same global
    batch in the same full index, so all processes compute the same term.

    Diagnostics (floats): ``adv_displacement`` (mean ``||\\hat z - a||``), ``adv_norm_offset``
    (mean ``||\\hat z - z'||``), ``p_mean``, ``m_mean``, ``q_mean``, ``hinge_active`` (fraction of
    rows with a positive hinge), ``quad`` (unweighted ``L_quad``), ``retrieval_ms``,
    ``index_build_s`` (seconds spent encoding and building the bank so far in this run, the first
    build included: cumulative, so any logging step shows the whole cost).

    Buffers (checkpointed): ``refresh_count``, ``built_at_step``, ``build_seconds`` and ``bank_fingerprint`` (a
    summary of the bank; on the first step after a restore it is compared with the bank this
    process built, and a mismatch — e.g. an official-mode bank not built from the initial
    backbone — is reported with a warning).
    """

    name = "hsimcse"
    stage = "term"
    title = "HSimCSE"
    citation = CITATION

    def __init__(
        self,
        config: HSimCSEConfig,
        index: CorpusIndex,
        bank_row: np.ndarray | None = None,
        build_seconds: float = 0.0,
    ) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.adversarial = AdversarialPositive(
            config.adv_step, config.adv_init, config.adv_iters, config.seed_for(None)
        )
        self.in_batch = InBatchHardestNegative()
        self.corpus = CorpusNegative(index, config.k, config.top_mean, config.exclude_self, bank_row=bank_row)
        self.register_buffer("refresh_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("built_at_step", torch.full((), -1, dtype=torch.long))
        self.register_buffer("build_seconds", torch.zeros((), dtype=torch.float64))
        self.register_buffer("bank_fingerprint", torch.zeros(4, dtype=torch.float64))
        self._checked = False
        if index.index is not None:
            self._record_build(index, seconds=build_seconds, refresh=False)

    @property
    def index(self) -> CorpusIndex:
        return self.corpus.index

    # -- index (re)builds ----------------------------------------------------------------------
    def _record_build(self, index: CorpusIndex, seconds: float, refresh: bool) -> None:
        self.built_at_step.fill_(index.built_at_step)
        self.bank_fingerprint.copy_(torch.from_numpy(index.fingerprint))
        if refresh:
            self.refresh_count += 1
        self.build_seconds += seconds

    def rebuild_index(
        self,
        model: SentenceTransformer,
        corpus: list[str],
        step: int,
        batch_size: int = 128,
        show_progress: bool = False,
        refresh: bool = True,
    ) -> float:
        """Re-encode ``corpus`` with ``model`` in this config's space and rebuild the index.

        Returns the seconds spent (encoding + building). ``refresh`` counts it as a refresh.
        """
        started = time.perf_counter()
        vectors = encode_corpus(
            model, corpus, batch_size=batch_size, mode=self.config.index_mode, show_progress=show_progress
        )
        self.index.build(vectors, step=step)
        del vectors
        seconds = time.perf_counter() - started
        self._record_build(self.index, seconds, refresh)
        return seconds

    def _check_restored_bank(self) -> None:
        self._checked = True
        current = self.index.fingerprint
        saved = self.bank_fingerprint.cpu().numpy()
        if current is None or not saved.any():
            return
        same_shape = saved[0] == current[0] and saved[1] == current[1]
        close = np.allclose(saved[2:], current[2:], rtol=1e-3, atol=1e-2 * max(1.0, np.sqrt(current[0])))
        if not (same_shape and close):
            warnings.warn(
                "the HSimCSE corpus bank differs from the one recorded in the restored checkpoint "
                f"(rows/dim {int(saved[0])}x{int(saved[1])} vs {int(current[0])}x{int(current[1])}); "
                "in official mode the bank must be encoded by the untrained base model, so resume with "
                "the same --model and corpus, not a checkpoint directory.",
                stacklevel=2,
            )
        self.bank_fingerprint.copy_(torch.from_numpy(current))

    # -- the objective ---------------------------------------------------------------------
    def contribute(self, batch: ContrastiveBatch) -> None:
        if self.index.index is None:
            raise RuntimeError(
                "the HSimCSE corpus index has not been built: run the hooks returned by build_hsimcse "
                "(refresh mode builds the index when training begins; hardcse's trainer does this)."
            )
        if batch.training and not self._checked:
            self._check_restored_bank()
        z1, z2 = batch.z1, batch.z2
        if batch.size < 2:
            batch.add_loss("quad", z1.sum() * 0.0)
            return
        cfg = self.config
        m = self.in_batch(batch.sim)
        z_hat, start = self.adversarial(z1, z2, batch.temperature, batch.step)
        n_bar = self.corpus(z1, batch.ids)
        z1f = z1.float()
        p = F.cosine_similarity(z1f, z_hat, dim=-1, eps=1e-8)
        q = F.cosine_similarity(z1f, n_bar, dim=-1, eps=1e-8)
        hinge = quadruplet_hinge(m.float(), q, p, cfg.w_inbatch, cfg.w_corpus, cfg.margin)
        l_quad = hinge.mean()
        batch.add_loss("quad", cfg.quad_weight * l_quad)
        with torch.no_grad():
            batch.diagnostics.update(
                {
                    "adv_displacement": float((z_hat - start).norm(dim=-1).mean()),
                    "adv_norm_offset": float((z_hat - z2.detach().float()).norm(dim=-1).mean()),
                    "p_mean": float(p.mean()),
                    "m_mean": float(m.mean()),
                    "q_mean": float(q.mean()),
                    "hinge_active": float((hinge > 0).float().mean()),
                    "quad": float(l_quad),
                    "retrieval_ms": 1000.0 * self.corpus.last_seconds,
                    "index_build_s": float(self.build_seconds),
                }
            )


# -- the index refresh (a step hook) ---------------------------------------------------------
class IndexRefreshHook(StepHook):
    """Rebuild the corpus index of an HSimCSE part (``index_mode: refresh``) from the model being trained.

    The official bank is encoded once by the untrained backbone and never refreshed, so its keys
    drift away from the queries' space. This hook re-encodes the bank with the
    current model (eval mode: no dropout; the train-only head applied, i.e. the queries' space)
    and rebuilds the faiss index:

    * when training begins: at step 0 the bank of the untrained model, on resume (step > 0) the
      bank of the restored model — deterministic (eval mode, a fixed encoding order, no random
      numbers drawn), so two resumes from one checkpoint give the same bank. It is the model *at
      the checkpoint*, not at the last refresh before it: exact equality with an uninterrupted run
      would require saving the whole bank (n x d floats) in every checkpoint;
    * every ``refresh_steps`` optimisation steps, except at the last step (the new bank would
      never be used).

    Every module's train/eval flag is restored afterwards. Under ``torch.distributed`` each
    process encodes its shard and the shards are all-gathered
    (:func:`hardcse.models.corpus_encoding.encode_corpus`), so every process runs the hook at the
    same steps and holds the same index. ``refreshes`` lists ``{"step", "seconds"}`` per build.
    """

    def __init__(
        self,
        part: HSimCSEPart,
        corpus: list[str],
        refresh_steps: int,
        batch_size: int = 128,
        show_progress: bool = True,
    ) -> None:
        if part.config.index_mode != "refresh":
            raise ConfigError("the index refresh hook is for hsimcse index_mode 'refresh' only.")
        if refresh_steps < 1:
            raise ConfigError(f"hsimcse refresh_steps must be at least 1, got {refresh_steps}.")
        self.part = part
        self.corpus = corpus
        self.refresh_steps = int(refresh_steps)
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.refreshes: list[dict[str, float]] = []

    def _rebuild(self, info: StepInfo, refresh: bool) -> None:
        if info.model is None:
            raise RuntimeError("the trainer passed no model to the HSimCSE index refresh.")
        seconds = self.part.rebuild_index(
            info.model,
            self.corpus,
            step=info.step,
            batch_size=self.batch_size,
            show_progress=self.show_progress and info.main,
            refresh=refresh,
        )
        self.refreshes.append({"step": info.step, "seconds": round(seconds, 3)})
        logger.info("HSimCSE corpus index rebuilt at step %d in %.1f s", info.step, seconds)

    def on_train_begin(self, info: StepInfo) -> None:
        index = self.part.index
        if index.index is None or (info.step > 0 and index.built_at_step != info.step):
            self._rebuild(info, refresh=info.step > 0)

    def on_step_end(self, info: StepInfo) -> None:
        step, last = info.step, info.max_steps
        if step > 0 and step % self.refresh_steps == 0 and (last is None or step < last):
            self._rebuild(info, refresh=True)


# -- assembly --------------------------------------------------------------------------------
def build_hsimcse(
    config: HSimCSEConfig,
    model: SentenceTransformer,
    corpus: list[str],
    batch_size: int = 128,
    show_progress: bool = True,
    run_seed: int | None = None,
) -> tuple[list[Part], list[StepHook]]:
    """The HSimCSE parts and their step hooks, for ``model`` trained on ``corpus``.

    Call it **before** training with the freshly built (untrained) model; ``corpus[i]`` must be
    the sentence whose dataset ``label`` is ``i``. ``run_seed`` (the run's ``--seed``) seeds the
    random offsets, the bank sample and the IVF training unless ``config.seed`` is set; the
    part's config holds the resolved seed. All three are functions of the seed (and step) only,
    so a resumed run draws them again exactly without saved RNG state.

    * ``official`` mode: the bank is encoded here, from the untrained backbone (eval mode, no
      head, L2-normalised raw [CLS]), and never rebuilt. On resume the trainer restores the
      checkpoint's weights only inside ``trainer.train``, so the model given here is still the
      base model and the rebuilt bank is the same one (deterministic: eval mode, fixed order);
      the bank's fingerprint buffer checks this. No hook is needed.
    * ``refresh`` mode: the returned :class:`IndexRefreshHook` builds the bank when training
      begins (from the restored model on resume) and rebuilds it every ``refresh_steps``
      optimisation steps from the current model (head applied, no dropout). Nothing is encoded
      here, so a resume does not encode the corpus twice.
    """
    config.validate()
    if not corpus:
        raise ConfigError("HSimCSE needs a non-empty training corpus for its corpus index.")
    config = replace(config, seed=config.seed_for(run_seed))
    bank, bank_row = bank_sample(corpus, config.bank_size, config.seed)
    index = CorpusIndex(
        kind=config.index_kind,
        duplicate_group=duplicate_groups(bank),
        nlist=config.nlist,
        nprobe=config.nprobe,
        hnsw_m=config.hnsw_m,
        ef_construction=config.ef_construction,
        ef_search=config.ef_search,
        seed=config.seed,
    )
    hooks: list[StepHook] = []
    if config.index_mode == "official":
        started = time.perf_counter()
        vectors = encode_corpus(model, bank, batch_size=batch_size, mode="official", show_progress=show_progress)
        index.build(vectors, step=0)
        del vectors
        part = HSimCSEPart(config, index, bank_row=bank_row, build_seconds=time.perf_counter() - started)
    else:
        part = HSimCSEPart(config, index, bank_row=bank_row)
        hook = IndexRefreshHook(part, bank, config.refresh_steps, batch_size=batch_size, show_progress=show_progress)
        hooks.append(hook)
    return [part], hooks


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


def bank_sample(corpus: list[str], size: int | None, seed: int) -> tuple[list[str], np.ndarray | None]:
    """The sentences to index and the corpus-row -> bank-row map used for self-exclusion.

    ``size`` None or >= the corpus: the whole corpus, map ``None`` (identity). Otherwise a fixed
    sample of ``size`` rows (drawn with ``seed``, kept in corpus order) and, for every corpus row,
    the bank row with the same text (its own row, or a duplicate's), or -1 if the bank has none.
    """
    if size is None or size >= len(corpus):
        return corpus, None
    rows = np.sort(np.random.default_rng(seed).choice(len(corpus), size=size, replace=False))
    bank = [corpus[i] for i in rows]
    where = {text: j for j, text in enumerate(bank)}
    bank_row = np.fromiter((where.get(text, -1) for text in corpus), dtype=np.int64, count=len(corpus))
    return bank, bank_row


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
    citation=CITATION,
    title="HSimCSE",
    summary="an adversarial hard positive and in-batch + corpus (faiss) hard negatives in a quadruplet hinge",
)
