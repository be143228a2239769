"""Corpus hard negatives from a faiss index over the training corpus, a negative miner any method
may inject (HSimCSE's corpus negative; IJCNN 2023, official code ``xubodhu/HSimCSE``).

For anchor ``i`` the miner searches the ``k`` nearest bank vectors of the detached fp32 query
``z_i`` (inner product; the bank is L2-normalised, so the ranking is the cosine ranking) and
publishes

.. math::

    \\bar n_i = \\frac1{|T_i|} \\sum_{r \\in T_i} b_r,

``T_i`` the ``top_mean`` best admissible hits, as hard negative ``corpus``
(:meth:`~hardcse.objectives.base.ContrastiveBatch.add_hard_negative`; its cosine
``q_i = s(z_i, \\bar n_i)`` carries gradient into ``z_i`` only). Official constants: ``k = 7``,
``top_mean = 3``; the bank is the *untrained* backbone's L2-normalised raw ``[CLS]`` (no MLP head,
no dropout), exact inner-product search, built once (``index_mode="official"``).

Differences from the official code, on purpose:

* self-exclusion works: by corpus row id and exact-duplicate text (the official token-id
  comparison is misaligned and never fires for RoBERTa);
* ``index_mode="refresh"`` re-encodes the bank in the queries' space (head applied, dropout
  off) every ``refresh_steps`` optimisation steps (:class:`IndexRefreshHook`, a step hook the
  trainer runs), instead of keeping the frozen initial space;
* it works under DDP: the corpus is searched once per step for the gathered global batch and
  every process holds the same full index (the official code only runs on one GPU);
* ``bank_size`` may index a fixed random sample of the corpus instead of all of it, and
  ``index_kind`` an approximate index (IVF, HNSW) for large corpora.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from torch import Tensor

from hardcse.errors import ConfigError
from hardcse.index.bank import INDEX_KINDS, CorpusIndex, duplicate_groups
from hardcse.models.corpus_encoding import encode_corpus
from hardcse.objectives.base import ContrastiveBatch, Part
from hardcse.objectives.citations import HSIMCSE_CITATION
from hardcse.objectives.registry import StepHook, StepInfo
from hardcse.objectives.seeds import method_seed

logger = logging.getLogger(__name__)

INDEX_MODES = ("official", "refresh")


@dataclass
class CorpusIndexConfig:
    """The settings of a corpus index miner (the defaults are HSimCSE's official ones).

    ``k`` neighbours searched, mean of the ``top_mean`` best; ``exclude_self`` drops the sentence
    and its exact duplicates from its neighbours (needs each sentence's corpus row: the dataset's
    ``label``). Index: ``index_mode`` (``official``: the untrained backbone's raw [CLS], built once;
    ``refresh``: the current model with its head, rebuilt every ``refresh_steps`` optimisation
    steps), ``index_kind`` (``flat`` exact, ``ivf``, ``hnsw``) with ``nlist``/``nprobe`` (IVF) and
    ``hnsw_m``/``ef_construction``/``ef_search`` (HNSW). ``bank_size``: ``None`` indexes the whole
    corpus; a number a fixed random sample of that many sentences. ``seed`` (bank sample, IVF
    training; ``None``: the run's ``--seed``, see :meth:`seed_for`).
    """

    k: int = 7
    top_mean: int = 3
    exclude_self: bool = True
    index_mode: str = "official"
    refresh_steps: int = 50
    index_kind: str = "flat"
    nlist: int | None = None
    nprobe: int = 16
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 64
    seed: int | None = None
    bank_size: int | None = None

    def seed_for(self, run_seed: int | None = None) -> int:
        """The seed used: ``seed`` when set, else ``run_seed``, else 42."""
        return method_seed(self.seed, run_seed)

    def validate(self, owner: str = "corpus index") -> None:
        """Raise :class:`~hardcse.errors.ConfigError` for an impossible value (``owner`` names the
        settings in the message, e.g. ``hsimcse``)."""
        if self.index_mode not in INDEX_MODES:
            raise ConfigError(
                f"unknown {owner} index_mode '{self.index_mode}'; choose one of {', '.join(INDEX_MODES)}."
            )
        if self.index_kind not in INDEX_KINDS:
            raise ConfigError(
                f"unknown {owner} index_kind '{self.index_kind}'; choose one of {', '.join(INDEX_KINDS)}."
            )
        if self.k < 1:
            raise ConfigError(f"{owner} k must be at least 1, got {self.k}.")
        if not 1 <= self.top_mean <= self.k:
            raise ConfigError(f"{owner} top_mean must be between 1 and k={self.k}, got {self.top_mean}.")
        if self.index_mode == "refresh" and self.refresh_steps < 1:
            raise ConfigError(f"{owner} refresh_steps must be at least 1, got {self.refresh_steps}.")
        if self.bank_size is not None and self.bank_size < 1:
            raise ConfigError(
                f"{owner} bank_size must be at least 1 (or null: the whole corpus), got {self.bank_size}."
            )
        if self.nprobe < 1 or self.hnsw_m < 2 or self.ef_search < 1 or self.ef_construction < 1:
            raise ConfigError(f"{owner} nprobe, ef_search and ef_construction must be >= 1 and hnsw_m >= 2.")


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


class CorpusIndexNegative(Part):
    """Publishes ``\\bar n_i`` (module doc) as hard negative ``key``, from ``index``.

    ``config`` holds the search and index settings (``index`` must be built with them, as
    :func:`build_corpus_index` does), ``owner`` names the settings in messages (``hsimcse``),
    ``name`` replaces the part's name (two corpus index miners in one recipe need two names and
    two keys).

    The query is the detached fp32 ``z_i`` (not normalised, as official). With ``exclude_self``
    the sentence's own row and its exact duplicates are excluded (needs the corpus row ids;
    ``bank_row`` maps a corpus row to the bank row holding the same text, -1 if the bank lacks
    it). If fewer than ``top_mean`` admissible hits exist (tiny corpora), the mean runs over those
    that exist; a row with none gets a zero vector (cosine 0). The value carries no gradient. The
    corpus is searched once per step, for the global (gathered) batch; a batch of one sentence is
    not searched.

    Diagnostics: ``retrieval_ms`` (this step's search) and ``index_build_s`` (seconds spent
    encoding and building the bank so far in this run, the first build included: cumulative, so
    any logging step shows the whole cost).

    Buffers (checkpointed): ``refresh_count``, ``built_at_step``, ``build_seconds`` and
    ``bank_fingerprint`` (a summary of the bank; on the first training step after a restore it is
    compared with the bank this process built, and a mismatch, e.g. an official-mode bank not
    built from the initial backbone, is reported with a warning).
    """

    name = "corpus_index_negative"
    stage = "negative"
    title = "HSimCSE"
    citation = HSIMCSE_CITATION

    def __init__(
        self,
        config: CorpusIndexConfig,
        index: CorpusIndex,
        bank_row: np.ndarray | None = None,
        build_seconds: float = 0.0,
        key: str = "corpus",
        owner: str = "corpus index",
        name: str | None = None,
    ) -> None:
        super().__init__()
        config.validate(owner)
        if name is not None:
            self.name = name
        self.config = config
        self.index = index
        self.bank_row = bank_row
        self.key = key
        self.owner = owner
        self.last_ids: np.ndarray | None = None
        self.last_scores: np.ndarray | None = None
        self.last_seconds = 0.0
        self.register_buffer("refresh_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("built_at_step", torch.full((), -1, dtype=torch.long))
        self.register_buffer("build_seconds", torch.zeros((), dtype=torch.float64))
        self.register_buffer("bank_fingerprint", torch.zeros(4, dtype=torch.float64))
        self._checked = False
        if index.index is not None:
            self._record_build(index, seconds=build_seconds, refresh=False)

    def get_config_dict(self) -> dict[str, Any]:
        return {**asdict(self.config), "key": self.key}

    # -- the search ----------------------------------------------------------------------------
    def search(self, queries: Tensor, ids: Tensor | None) -> Tensor:
        """``\\bar n`` (N x d, float32, on the queries' device) for ``queries`` with corpus rows ``ids``."""
        cfg = self.config
        if cfg.exclude_self and ids is None:
            raise ConfigError(
                "corpus-index self-exclusion needs each sentence's corpus row: the training dataset must have "
                f"an integer 'label' column holding the row id (or set {self.owner} exclude_self to false)."
            )
        started = time.perf_counter()
        exclude = None
        if cfg.exclude_self:
            exclude = ids.detach().cpu().numpy() if isinstance(ids, Tensor) else np.asarray(ids)
            if self.bank_row is not None:
                exclude = self.bank_row[exclude]
        scores, rows, vectors = self.index.search(queries.detach().float().cpu().numpy(), cfg.k, exclude)
        top = vectors[:, : cfg.top_mean]
        count = (rows[:, : cfg.top_mean] >= 0).sum(axis=1, keepdims=True).clip(min=1)
        mean = top.sum(axis=1) / count.astype(np.float32)
        self.last_seconds = time.perf_counter() - started
        self.last_ids, self.last_scores = rows, scores
        return torch.from_numpy(mean).to(queries.device)

    def contribute(self, batch: ContrastiveBatch) -> None:
        if self.index.index is None:
            raise RuntimeError(
                "the corpus index has not been built: run the hooks returned by build_corpus_index "
                "(refresh mode builds the index when training begins; hardcse's trainer does this)."
            )
        if batch.training and not self._checked:
            self._check_restored_bank()
        if batch.size < 2:
            return
        batch.add_hard_negative(self.key, self.search(batch.z1, batch.ids))
        batch.diagnostics["retrieval_ms"] = 1000.0 * self.last_seconds
        batch.diagnostics["index_build_s"] = float(self.build_seconds)

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
                "the corpus bank differs from the one recorded in the restored checkpoint "
                f"(rows/dim {int(saved[0])}x{int(saved[1])} vs {int(current[0])}x{int(current[1])}); "
                "in official mode the bank must be encoded by the untrained base model, so resume with "
                "the same --model and corpus, not a checkpoint directory.",
                stacklevel=2,
            )
        self.bank_fingerprint.copy_(torch.from_numpy(current))


# -- the index refresh (a step hook) ---------------------------------------------------------
class IndexRefreshHook(StepHook):
    """Rebuild the index of a :class:`CorpusIndexNegative` (``index_mode: refresh``) from the model being trained.

    The official bank is encoded once by the untrained backbone and never refreshed, so its keys
    drift away from the queries' space. This hook re-encodes the bank with the current model
    (eval mode: no dropout; the train-only head applied, i.e. the queries' space) and rebuilds the
    faiss index:

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
        part: CorpusIndexNegative,
        corpus: list[str],
        refresh_steps: int,
        batch_size: int = 128,
        show_progress: bool = True,
    ) -> None:
        if part.config.index_mode != "refresh":
            raise ConfigError(f"the index refresh hook is for {part.owner} index_mode 'refresh' only.")
        if refresh_steps < 1:
            raise ConfigError(f"{part.owner} refresh_steps must be at least 1, got {refresh_steps}.")
        self.part = part
        self.corpus = corpus
        self.refresh_steps = int(refresh_steps)
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.refreshes: list[dict[str, float]] = []

    def _rebuild(self, info: StepInfo, refresh: bool) -> None:
        if info.model is None:
            raise RuntimeError("the trainer passed no model to the corpus index refresh.")
        seconds = self.part.rebuild_index(
            info.model,
            self.corpus,
            step=info.step,
            batch_size=self.batch_size,
            show_progress=self.show_progress and info.main,
            refresh=refresh,
        )
        self.refreshes.append({"step": info.step, "seconds": round(seconds, 3)})
        logger.info("corpus index rebuilt at step %d in %.1f s", info.step, seconds)

    def on_train_begin(self, info: StepInfo) -> None:
        index = self.part.index
        if index.index is None or (info.step > 0 and index.built_at_step != info.step):
            self._rebuild(info, refresh=info.step > 0)

    def on_step_end(self, info: StepInfo) -> None:
        step, last = info.step, info.max_steps
        if step > 0 and step % self.refresh_steps == 0 and (last is None or step < last):
            self._rebuild(info, refresh=True)


# -- assembly --------------------------------------------------------------------------------
def build_corpus_index(
    config: CorpusIndexConfig,
    model: SentenceTransformer,
    corpus: list[str],
    batch_size: int = 128,
    show_progress: bool = True,
    run_seed: int | None = None,
    key: str = "corpus",
    owner: str = "corpus index",
    name: str | None = None,
) -> tuple[CorpusIndexNegative, list[StepHook]]:
    """The corpus index miner and its step hooks, for ``model`` trained on ``corpus``.

    Call it **before** training with the freshly built (untrained) model; ``corpus[i]`` must be
    the sentence whose dataset ``label`` is ``i``. ``run_seed`` (the run's ``--seed``) seeds the
    bank sample and the IVF training unless ``config.seed`` is set; the part's config holds the
    resolved seed. Both are functions of the seed only, so a resumed run draws them again exactly
    without saved RNG state. ``key``, ``owner`` and ``name`` are passed to :class:`CorpusIndexNegative`.

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
    config.validate(owner)
    if not corpus:
        raise ConfigError(f"{owner} needs a non-empty training corpus for its corpus index.")
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
    if config.index_mode == "official":
        started = time.perf_counter()
        vectors = encode_corpus(model, bank, batch_size=batch_size, mode="official", show_progress=show_progress)
        index.build(vectors, step=0)
        del vectors
        seconds = time.perf_counter() - started
        part = CorpusIndexNegative(
            config, index, bank_row=bank_row, build_seconds=seconds, key=key, owner=owner, name=name
        )
        return part, []
    part = CorpusIndexNegative(config, index, bank_row=bank_row, key=key, owner=owner, name=name)
    hook = IndexRefreshHook(part, bank, config.refresh_steps, batch_size=batch_size, show_progress=show_progress)
    return part, [hook]
