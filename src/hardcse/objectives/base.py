"""The contrastive frame every method plugs into.

:class:`HardCSELoss` is a sentence-transformers loss (``forward(sentence_features, labels)``).
Its encoding strategy (:class:`~hardcse.objectives.encoding.TwoViewEncoder`) encodes each sentence
twice in **one** forward pass (the batch is stacked on itself, so the two copies get independent
dropout masks, as the official SimCSE ``cl_forward``) and gathers the views across processes, or a
cached step (:class:`~hardcse.objectives.cached.CachedStep`) does so in mini-batches; the loss
itself is the objective: the unsupervised SimCSE InfoNCE (Gao et al., 2021, Eq. 4):

.. math::

    \\mathcal L = \\frac1N \\sum_i -\\log \\frac{e^{s(z_i, z'_i)/\\tau}}
        {\\sum_j e^{s(z_i, z'_j)/\\tau} + \\sum_k e^{w_{ik}} e^{e_{ik}/\\tau}}

with view-1 anchors only, cosine ``s``, temperature ``tau = 0.05``. Methods change it through
:class:`Part` objects, which see one :class:`ContrastiveBatch` in order and may

* append extra negative columns ``e`` (cosines, unscaled) with optional log-weights ``w``
  (ClusterNS centroids);
* remove in-batch columns from the denominator (false-negative masking);
* add weighted auxiliary loss terms (BML, the HSimCSE quadruplet hinge);
* record diagnostics (floats, logged in the training history).

The loss returns a dict of components (``infonce`` and one key per auxiliary term); the trainer
sums them and logs each one. Diagnostics of the last training step are in
:attr:`HardCSELoss.last_diagnostics`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hardcse.errors import ConfigError
from hardcse.numeric import pairwise_cosine
from hardcse.objectives.cached import CachedStep
from hardcse.objectives.encoding import TwoViewEncoder
from hardcse.objectives.heads import SIMCSE_CITATION, ContrastiveHead, InfoNCE


@dataclass
class ContrastiveBatch:
    """What the parts of an objective see and add to, for one (global) batch.

    ``z1``/``z2`` are the two views (N x d, with gradient), ``sim`` their unscaled cosine
    matrix ``sim[i, j] = cos(z1_i, z2_j)``, ``ids`` the corpus row of each sentence (or None).

    Parts hand results to each other through named slots, filled by an earlier stage
    (:data:`STAGES`) and read by a later one:

    * ``positives`` (stage ``positive``): per-row positives by name, e.g. ``"adversarial"``
      (HSimCSE's adversarial positive); :meth:`add_positive`, :meth:`positive_cos`;
    * ``hard_negatives`` (stage ``negative``): per-row hard negatives by name, e.g.
      ``"in_batch_hardest"`` (the hardest in-batch cosine) or ``"corpus"`` (the mean of a row's
      corpus neighbours); :meth:`add_hard_negative`, :meth:`hard_negative_cos`;
    * ``false_negatives`` (stage ``negative``): an N x N mask of pairs a miner believes are not
      negatives (ClusterNS: same cluster), consumed by the ``false_negative`` handlers (mask them,
      penalise them with BML, or ignore them); :meth:`mark_false_negatives`.

    A per-row value is either N cosines to the anchor ``z_i`` or an N x d embedding, whose cosine
    to ``z_i`` the ``*_cos`` accessors take. Negative columns of the contrastive logits
    (:meth:`add_columns`, :meth:`remove_in_batch`), auxiliary losses (:meth:`add_loss`) and
    diagnostics are what parts add for the head and the trainer.
    """

    z1: Tensor
    z2: Tensor
    sim: Tensor
    ids: Tensor | None
    step: int
    temperature: float
    training: bool = True
    extra_columns: list[Tensor] = field(default_factory=list)
    extra_log_weights: list[Tensor | None] = field(default_factory=list)
    removed: Tensor | None = None
    losses: dict[str, Tensor] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    positives: dict[str, Tensor] = field(default_factory=dict)
    hard_negatives: dict[str, Tensor] = field(default_factory=dict)
    false_negatives: Tensor | None = None

    @property
    def size(self) -> int:
        return self.z1.shape[0]

    def add_positive(self, name: str, value: Tensor) -> None:
        """Publish a per-row positive ``name``: N cosines to ``z_i`` or an N x d embedding."""
        self._publish(self.positives, "positive", name, value)

    def positive_cos(self, name: str) -> Tensor:
        """The cosine (fp32, N) of each anchor ``z_i`` to its positive ``name``."""
        return self._row_cosines(self.positives, "positive", name)

    def add_hard_negative(self, name: str, value: Tensor) -> None:
        """Publish a per-row hard negative ``name``: N cosines to ``z_i`` or an N x d embedding."""
        self._publish(self.hard_negatives, "hard negative", name, value)

    def hard_negative_cos(self, name: str) -> Tensor:
        """The cosine (fp32, N) of each anchor ``z_i`` to its hard negative ``name``."""
        return self._row_cosines(self.hard_negatives, "hard negative", name)

    def mark_false_negatives(self, mask: Tensor) -> None:
        """Mark in-batch pairs ``mask[i, j] = True`` as false negatives (diagonal dropped; marks of
        several miners are joined). Only handlers act on them: :meth:`remove_in_batch`, a penalty."""
        mask = mask.bool() & ~torch.eye(self.size, dtype=torch.bool, device=mask.device)
        self.false_negatives = mask if self.false_negatives is None else (self.false_negatives | mask)

    def _publish(self, slot: dict[str, Tensor], kind: str, name: str, value: Tensor) -> None:
        if name in slot:
            raise ConfigError(f"two parts of the recipe publish the {kind} '{name}'; a recipe has one of each name.")
        if value.shape[0] != self.size or value.dim() not in (1, 2):
            raise ValueError(
                f"the {kind} '{name}' has shape {tuple(value.shape)}; expected ({self.size},) or ({self.size}, d)."
            )
        slot[name] = value

    def _row_cosines(self, slot: dict[str, Tensor], kind: str, name: str) -> Tensor:
        if name not in slot:
            published = ", ".join(sorted(slot)) or "none"
            raise ConfigError(
                f"no part of the recipe publishes the {kind} '{name}' (published: {published}); "
                "add the part that produces it to the recipe."
            )
        value = slot[name]
        if value.dim() == 1:
            return value.float()
        return F.cosine_similarity(self.z1.float(), value.float(), dim=-1, eps=1e-8)

    def add_columns(self, cosines: Tensor, log_weights: Tensor | None = None) -> None:
        """Append negative columns: ``cosines`` is N x M (unscaled), ``log_weights`` N x M or None."""
        self.extra_columns.append(cosines)
        self.extra_log_weights.append(log_weights)

    def remove_in_batch(self, mask: Tensor) -> None:
        """Drop in-batch columns ``mask[i, j] = True`` from row i's denominator (diagonal kept)."""
        mask = mask.bool() & ~torch.eye(self.size, dtype=torch.bool, device=mask.device)
        self.removed = mask if self.removed is None else (self.removed | mask)

    def add_loss(self, name: str, value: Tensor) -> None:
        """Add a weighted auxiliary term; it is summed into the total loss and logged as ``name``."""
        self.losses[name] = self.losses[name] + value if name in self.losses else value

    def logits(self) -> Tensor:
        """The contrastive logits, fp32, ``N x (N + M)``: ``[sim | extra columns] / tau``, each extra
        block plus its log-weights, removed in-batch entries ``-inf``. Row ``i`` is anchor ``z_i``,
        column ``i`` its positive; every other column a negative. What the head reads."""
        tau = self.temperature
        logits = self.sim / tau
        if self.removed is not None:
            logits = logits.masked_fill(self.removed, float("-inf"))
        blocks = [logits]
        for cols, log_w in zip(self.extra_columns, self.extra_log_weights, strict=True):
            scaled = cols / tau
            blocks.append(scaled if log_w is None else scaled + log_w)
        logits = torch.cat(blocks, dim=1) if len(blocks) > 1 else logits
        return logits.float()

    def labels(self) -> Tensor:
        """The positive's column of each row of :meth:`logits` (``i`` for row ``i``)."""
        return torch.arange(self.size, device=self.sim.device)


#: The stages a step runs its parts in, in this order; within a stage, in recipe order. A part's
#: ``stage`` says what it needs to have been done before it: ``positive`` (builds positives),
#: ``negative`` (appends negative columns, e.g. centroids or corpus neighbours), ``false_negative``
#: (removes in-batch columns or penalises them), ``term`` (auxiliary losses and diagnostics that may
#: read every column). The head runs after all of them, so a recipe's loss does not depend on the
#: order its methods are named in.
STAGES: tuple[str, ...] = ("positive", "negative", "false_negative", "term")


class Part(nn.Module):
    """One piece of an objective (a positive, negative, false-negative or auxiliary rule).

    Subclasses implement :meth:`contribute` and set ``stage`` (one of :data:`STAGES`; default
    ``term``). State that must survive a restart is kept in buffers, so it is in ``state_dict()``
    and saved with training checkpoints.

    Attributes:
        name: a short name (the method's, for a method's part).
        stage: when in a step it runs (:data:`STAGES`).
        title: the method's name as papers write it, for model cards ("" if none).
        citation: BibTeX of the source ("" if none); :attr:`HardCSELoss.citation` collects them.
    """

    name: str = "part"
    stage: str = "term"
    title: str = ""
    citation: str = ""

    def contribute(self, batch: ContrastiveBatch) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def forward(self, batch: ContrastiveBatch) -> None:
        self.contribute(batch)

    def get_config_dict(self) -> dict[str, Any]:
        """The part's settings: its ``config`` dataclass as a dict, if it has one."""
        config = getattr(self, "config", None)
        if config is not None and dataclasses.is_dataclass(config) and not isinstance(config, type):
            return dataclasses.asdict(config)
        return {}


def info_nce(batch: ContrastiveBatch) -> Tensor:
    """The SimCSE InfoNCE of ``batch`` (:class:`~hardcse.objectives.heads.InfoNCE`, the default head)."""
    return F.cross_entropy(batch.logits(), batch.labels())


class HardCSELoss(nn.Module):
    """Unsupervised contrastive loss over two dropout views, extended by :class:`Part` objects.

    The objective only: the batch (:class:`ContrastiveBatch`), the parts and the contrastive head.
    How the views are encoded is the encoding strategy's (``encoder``), and a cached step is the
    ``cached_step``'s; :meth:`forward` is "encode, then :meth:`compute_loss_from_embeddings`".

    Args:
        model: the SentenceTransformer being trained (its last module may be the train-only head).
        parts: the method's parts, applied in order.
        temperature: tau in the InfoNCE (0.05 in SimCSE, ClusterNS and HSimCSE).
        head: the contrastive head (:mod:`hardcse.objectives.heads`); default the SimCSE InfoNCE.
        encoder: the encoding strategy (:class:`~hardcse.objectives.encoding.TwoViewEncoder`: the
            two views in one pass, optionally in length chunks, gathered across processes); default
            ``TwoViewEncoder()`` (one pass, gathered).
        cached_step: cache every step (:class:`~hardcse.objectives.cached.CachedStep`, GradCache):
            encode ``mini_batch_size`` sentences' rows at a time, so activation memory is that of a
            mini-batch while the loss sees the whole batch. ``None``: one graph for the batch.

    The parts run in the order of their stage (:data:`STAGES`), in recipe order within a stage,
    then the head; the parts stay in recipe order in ``parts`` (and so in saved state).
    """

    def __init__(
        self,
        model: nn.Module,
        parts: Sequence[Part] = (),
        temperature: float = 0.05,
        head: ContrastiveHead | None = None,
        encoder: TwoViewEncoder | None = None,
        cached_step: CachedStep | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.parts = nn.ModuleList(parts)
        self.head = head if head is not None else InfoNCE()
        bad = [p for p in self.parts if getattr(p, "stage", "term") not in STAGES]
        if bad:
            raise ConfigError(
                f"part '{bad[0].name}' has stage '{bad[0].stage}'; a part's stage is one of {', '.join(STAGES)}."
            )
        self.temperature = temperature
        self.encoder = encoder if encoder is not None else TwoViewEncoder()
        self.cached_step = cached_step
        # The optimisation step, counted on training forwards; saved with the parts' state.
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.last_diagnostics: dict[str, Any] = {}

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None):
        """The loss components of one step: the encoding strategy's views of the global batch (or
        the cached step's, whose backward re-encodes them), then the objective."""
        features = list(sentence_features)
        if self.cached_step is not None:
            return self.cached_step.run(self.model, self.encoder, features, labels, self.compute_loss_from_embeddings)
        z1, z2, ids = self.encoder.encode(self.model, features, labels)
        return self.compute_loss_from_embeddings(z1, z2, ids)

    def compute_loss_from_embeddings(self, z1: Tensor, z2: Tensor, ids: Tensor | None = None) -> dict:
        """The loss components for views ``z1``/``z2`` (N x d) of the global batch.

        Always in fp32, also under bf16/fp16 autocast (the encoder's mixed precision stops here):
        bf16 keeps about 3 significant digits, and an error of 0.004 in a cosine is 0.08 in a
        logit at tau = 0.05.
        """
        z1, z2 = z1.float(), z2.float()
        with torch.autocast(device_type=z1.device.type, enabled=False):
            batch = ContrastiveBatch(
                z1=z1,
                z2=z2,
                sim=pairwise_cosine(z1, z2),
                ids=ids,
                step=int(self.step),
                temperature=self.temperature,
                training=self.training,
            )
            for part in self.ordered_parts():
                part(batch)
            losses = {self.head.name: self.head(batch)}
            clash = sorted(set(batch.losses) & set(losses))
            if clash:
                raise ConfigError(f"a part adds a loss named '{clash[0]}', the name of the head's loss; rename it.")
            losses.update(batch.losses)
        if self.training:
            self.step += 1
            self.last_diagnostics = batch.diagnostics
        return losses

    def ordered_parts(self) -> list[Part]:
        """The parts in the order a step runs them: by stage (:data:`STAGES`), then recipe order."""
        return sorted(self.parts, key=lambda part: STAGES.index(getattr(part, "stage", "term")))

    def get_config_dict(self) -> dict[str, Any]:
        """Every setting of the objective (the frame's, the head's and each part's, by its name) and
        of its encoding (the strategy's and the cached step's, ``None`` when steps are not cached)."""
        return {
            "temperature": self.temperature,
            "head": {"name": self.head.name, **self.head.get_config_dict()},
            "parts": {p.name: p.get_config_dict() for p in self.parts},
            "encoding": self.encoder.get_config_dict(),
            "cached_step": None if self.cached_step is None else self.cached_step.get_config_dict(),
        }

    @property
    def citations(self) -> list[tuple[str, str]]:
        """``(title, BibTeX)`` of every source of the objective, each once: SimCSE (the frame: two
        dropout views of each sentence), the head, then every part in recipe order."""
        found = [("SimCSE", SIMCSE_CITATION), (self.head.title or self.head.name, self.head.citation)]
        found += [(p.title or p.name, p.citation) for p in self.parts]
        cited: dict[str, tuple[str, str]] = {}
        for title, bibtex in found:
            if bibtex and bibtex.strip() not in cited:
                cited[bibtex.strip()] = (title, bibtex)
        return list(cited.values())

    @property
    def citation(self) -> str:
        """The BibTeX of every method of the objective (:attr:`citations`), one entry after another."""
        return "\n\n".join(bibtex.strip() for _, bibtex in self.citations)
