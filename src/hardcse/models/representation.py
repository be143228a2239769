"""The sentence representation of a training run, as one object: plain pooling, or a prompt.

:class:`Pooled` reads the sentence vector with a Pooling module (``cls``, ``mean``, ``max``);
:class:`Prompted` is the PromptBERT representation (the prompt variant of ClusterNS): the
``[MASK]`` state of the sentence wrapped in a template, two templates for the two training
views, template denoising in training (:mod:`hardcse.models.prompt`).

A representation owns what depends on it: building the training model (:meth:`Representation.build`),
the trainer's data collator (:meth:`Representation.collator`), the export and loading it back
(:meth:`Representation.export`, :meth:`Representation.load_export`), the pooling name recorded in
``start.json`` and the results (:meth:`Representation.describe`) and its part of the key under
which a comparison shares one untrained evaluation between runs (:meth:`Representation.identity`).
The two views themselves are built by the encoder module (the prompt encoder's ``two_views``,
which the contrastive frame calls).

The user-facing settings stay flat keys of the configuration (``pooling``, ``prompt``,
``prompt_template``, ``prompt_template2``, ``prompt_denoise``); :meth:`Representation.from_settings`
reads them. This module imports nothing heavy, so configurations can use it before anything loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from hardcse.errors import ConfigError
from hardcse.models.templates import PROMPT_POOLING_NAME

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from torch import nn

#: The pooling modes of plain training (``pooling`` setting).
POOLINGS = ("cls", "mean", "max")


@dataclass(frozen=True)
class Representation:
    """How a sentence becomes a vector in training and in the exported model (abstract: use
    :class:`Pooled` or :class:`Prompted`)."""

    #: Whether the exported model names a hardcse module class, so that loading it needs hardcse
    #: (:func:`hardcse.models.loading.load_sentence_model`) instead of plain ``SentenceTransformer(path)``.
    needs_hardcse: ClassVar[bool] = False

    @staticmethod
    def from_settings(settings: Mapping[str, Any]) -> Representation:
        """The representation of a configuration's settings (a ``TrainConfig.to_dict()`` or a
        run's ``config.yaml``): :class:`Prompted` when ``prompt`` is on, else :class:`Pooled`.
        Absent keys take the configuration's defaults."""
        pooling = settings.get("pooling", "cls")
        if settings.get("prompt"):
            return Prompted(
                template=settings.get("prompt_template"),
                template2=settings.get("prompt_template2"),
                denoise=bool(settings.get("prompt_denoise", True)),
                pooling=pooling,
            )
        return Pooled(pooling)

    def describe(self) -> str:
        """The pooling name recorded in ``start.json``, the results and the reports."""
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        """This representation's part of a run's start key (what the untrained encoder's scores
        depend on). The keys are the configuration's, so start files of earlier runs still match."""
        raise NotImplementedError

    def encoder(
        self, model: str | None, *, max_seq_length: int, dropout: float | None, trust_remote_code: bool
    ) -> list[nn.Module]:
        """The encoder modules (everything but the train-only head), loaded from ``model``."""
        raise NotImplementedError

    def build(
        self,
        model: str | None = None,
        *,
        max_seq_length: int = 32,
        mlp_head: bool = True,
        dropout: float | None = None,
        trust_remote_code: bool = False,
        device: str | None = None,
    ) -> SentenceTransformer:
        """The training model: the encoder (+ :class:`~hardcse.models.head.TrainOnlyHead`).

        Only the transformer weights are taken from ``model`` (a Hugging Face name or path, an ST
        directory, ``None``/``"default"``: the bundled model): an ST model's own pooling, Dense or
        Normalize modules are replaced by this representation, as in SimCSE, which starts from a
        raw backbone. ``dropout`` overrides both of the backbone's dropout probabilities;
        ``max_seq_length`` is the training truncation (32, as the official scripts).
        """
        from sentence_transformers import SentenceTransformer

        from hardcse.models.head import TrainOnlyHead

        modules = self.encoder(
            model, max_seq_length=max_seq_length, dropout=dropout, trust_remote_code=trust_remote_code
        )
        if mlp_head:
            modules.append(TrainOnlyHead(modules[0].get_embedding_dimension()))
        return SentenceTransformer(modules=modules, device=device)

    def collator(self, model: SentenceTransformer) -> Any:
        """The trainer's data collator for ``model`` (``None``: the trainer's own)."""
        return None

    def export(self, model: SentenceTransformer, path: str | Path, eval_max_seq_length: int | None = None) -> None:
        """Save the trained ``model`` without its train-only head (:func:`hardcse.models.encoder.export_model`)."""
        from hardcse.models.encoder import export_model

        export_model(model, path, eval_max_seq_length=eval_max_seq_length)

    def load_export(self, path: str | Path, device: str | None = None) -> SentenceTransformer:
        """The exported model at ``path``, loaded as a user loads it: plain
        ``SentenceTransformer(path)``."""
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(path), device=device)


@dataclass(frozen=True)
class Pooled(Representation):
    """Transformer + Pooling: the vector pooled from the last layer (``cls``, ``mean`` or ``max``).

    The export is a stock sentence-transformers model (Transformer + Pooling), so plain
    ``SentenceTransformer(path)`` and MTEB load it with the pooling it was trained for.
    """

    pooling: str = "cls"

    def describe(self) -> str:
        return self.pooling

    def identity(self) -> dict[str, Any]:
        return {"pooling": self.pooling}

    def encoder(
        self, model: str | None, *, max_seq_length: int, dropout: float | None, trust_remote_code: bool
    ) -> list[nn.Module]:
        if self.pooling not in POOLINGS:
            raise ConfigError(f"unknown pooling '{self.pooling}'; choose one of {', '.join(POOLINGS)}.")
        from sentence_transformers.base.modules.transformer import Transformer
        from sentence_transformers.sentence_transformer.modules.pooling import Pooling

        from hardcse.models.encoder import load_transformer

        transformer = load_transformer(
            Transformer, model, max_seq_length=max_seq_length, dropout=dropout, trust_remote_code=trust_remote_code
        )
        return [transformer, Pooling(transformer.get_embedding_dimension(), pooling_mode=self.pooling)]


@dataclass(frozen=True, kw_only=True)
class Prompted(Representation):
    """The ``[MASK]`` state of the sentence wrapped in a template (PromptBERT; prompt ClusterNS).

    Args:
        template: view 1's template, also the one the exported model encodes with (``None``: the
            official :data:`~hardcse.models.templates.PROMPT_TEMPLATE`).
        template2: view 2's template (``None``: :data:`~hardcse.models.templates.PROMPT_TEMPLATE2`).
        denoise: subtract the empty template's ``[MASK]`` state in training (official: on).
        pooling: the configuration's ``pooling`` setting, which the prompt encoder does not use;
            it is part of :meth:`identity` because start keys have always included it.

    ``None`` templates stay ``None`` (not the official text) in :meth:`identity`, so start keys
    are those runs have always had.
    """

    template: str | None = None
    template2: str | None = None
    denoise: bool = True
    pooling: str = "cls"
    needs_hardcse: ClassVar[bool] = True

    def describe(self) -> str:
        return PROMPT_POOLING_NAME

    def identity(self) -> dict[str, Any]:
        # The untrained encoder is scored with view 1's template only (no denoising at evaluation);
        # view 2's template has always been part of the key, so it stays.
        return {
            "pooling": self.pooling,
            "prompt": True,
            "prompt_template": self.template,
            "prompt_template2": self.template2,
        }

    def encoder(
        self, model: str | None, *, max_seq_length: int, dropout: float | None, trust_remote_code: bool
    ) -> list[nn.Module]:
        from hardcse.models.encoder import load_transformer
        from hardcse.models.prompt import PromptTransformer

        # No Pooling module: the prompt encoder reads the [MASK] state itself.
        return [
            load_transformer(
                PromptTransformer,
                model,
                max_seq_length=max_seq_length,
                dropout=dropout,
                trust_remote_code=trust_remote_code,
                prompt_template=self.template,
                prompt_template2=self.template2,
                prompt_denoise=self.denoise,
            )
        ]

    def collator(self, model: SentenceTransformer) -> Any:
        """A collator that tokenises each training sentence alone, without special tokens
        (:meth:`~hardcse.models.prompt.PromptTransformer.preprocess_sentences`); the encoder's
        ``two_views`` wraps them in the two templates."""
        from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator

        from hardcse.models.prompt import PromptTransformer

        first = model[0] if len(model) else None
        if not isinstance(first, PromptTransformer):
            raise ConfigError(
                f"the prompt representation needs a model built by it (a PromptTransformer first), got "
                f"{type(first).__name__}."
            )
        return SentenceTransformerDataCollator(preprocess_fn=first.preprocess_sentences)

    def load_export(self, path: str | Path, device: str | None = None) -> SentenceTransformer:
        """The exported prompt model, through hardcse's loader (its encoder is hardcse's own
        module, which plain ``SentenceTransformer(path)`` imports only with ``trust_remote_code``),
        as ``hardcse evaluate`` loads it."""
        from hardcse.models.loading import load_sentence_model

        return load_sentence_model(str(path), device=device)
