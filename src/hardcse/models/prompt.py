"""Prompt-based sentence representation (PromptBERT; the prompt variant of ClusterNS).

The sentence is wrapped in a template and its vector is the encoder's last-layer hidden state at
the template's ``[MASK]`` token (Jiang et al., 2022, PromptBERT; ``djz233/ClusterNS``
``train_prompt.py`` / ``prompt_bert/models.py`` / ``evaluation_prompt.py``).

Templates are written with two placeholders, ``{sentence}`` and ``{mask}`` (the tokenizer's mask
token). The defaults are the RoBERTa-style templates of the official ``run_prompt.sh``, which the
BERT run uses too (the script assigns the BERT templates first and then overwrites them):

* view 1: ``This sentence : ' {sentence} ' means{mask}.``
* view 2: ``The sentence : ' {sentence} ' means{mask}.``

**Training layout** (``train_prompt.py``): the sentence is tokenised alone, without special
tokens, and cut to ``max_seq_length`` (32) tokens *before* wrapping; a row of view ``v`` is
``[CLS] + prefix_v + sentence + suffix_v + [SEP]`` (``prefix_v`` = the template text before
``{sentence}``, stripped; ``suffix_v`` = the text after it), so the two dropout views differ by
template as well as by dropout. The training vector of row ``i`` with sentence length ``L_i`` is

.. math::

    h_i = H^{\\text{last}}_i[\\text{mask}] - \\delta_v(L_i),

where the *template denoising* term ``delta_v(L)`` is the ``[MASK]`` state of the empty template
``[CLS] + prefix_v + suffix_v + [SEP]`` whose position ids are ``0, 1, ...`` with the suffix part
(and ``[SEP]``) shifted by ``L``, i.e. the positions the template tokens have around a sentence
of ``L`` tokens (``--mask_embedding_sentence_delta``). It is computed in the same training forward,
with gradient and dropout, as the official ``get_delta``; only the lengths present in the batch
are encoded (the official code encodes ``L = 0..49`` and uses those same rows, so the loss and its
gradient are the same). The MLP head acts on ``h`` in training only (``--mlp_only_train``).

**Evaluation layout** (``evaluation_prompt.py``, which is what the exported model does under
``SentenceTransformer(path).encode``): a ``"."`` is appended to a sentence whose last character is
not one of ``. ? " '``, the text ``template_1(sentence)`` (stripped) is tokenised as a whole with
special tokens, and the vector is the ``[MASK]`` state, without denoising and without the head (the
official script does not pass the delta flag).

Official details kept on purpose (docs/prompt.md):

* the empty-template position ids start at 0 for every model, as ``get_delta`` passes them
  explicitly; for RoBERTa, whose sentence rows count positions from ``padding_idx + 1 = 2``, the
  template's positions are therefore off by two (BERT: exact);
* RoBERTa sees the sentence's first word without its leading-space marker in training (tokenised
  alone) and with it at evaluation (tokenised in context).

One difference: the shift of view 2's empty template starts after view 2's own prefix (the
official code uses view 1's prefix length for both; the shipped templates have prefixes of the
same length, so this changes nothing for them).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from sentence_transformers.base.modules.transformer import Transformer
from torch import Tensor

from hardcse.errors import ConfigError, DataError
from hardcse.models.templates import (  # noqa: F401 - the templates are part of this module's interface
    BERT_TEMPLATE,
    BERT_TEMPLATE2,
    FINAL_PUNCTUATION,
    PROMPT_POOLING_NAME,
    PROMPT_TEMPLATE,
    PROMPT_TEMPLATE2,
    add_final_period,
    check_templates,
    split_template,
)

#: Per-row features of the training layout, read (and removed) by :meth:`PromptTransformer.forward`.
LENGTH_KEY = "prompt_sentence_length"
VIEW_KEY = "prompt_view"
MASK_POSITION_KEY = "prompt_mask_position"
#: Marks the training collator's features (:meth:`PromptTransformer.preprocess_sentences`): their
#: ``input_ids``/``attention_mask`` are the sentences' own tokens, not yet wrapped in a template.
RAW_KEY = "prompt_raw_sentence"


class _Layout:
    """The token ids of one template for one tokenizer: special head/tail, prefix and suffix ids."""

    def __init__(self, tokenizer: Any, template: str, where: str) -> None:
        prefix, suffix = split_template(template, where)
        mask = tokenizer.mask_token
        self.template = template
        # train_prompt.py strips the prefix (for RoBERTa; BERT's WordPiece ignores the spaces anyway).
        self.prefix = _ids(tokenizer, prefix.replace("{mask}", mask).strip())
        self.suffix = _ids(tokenizer, suffix.replace("{mask}", mask).rstrip())
        specials = tokenizer("", add_special_tokens=True)["input_ids"]
        # [CLS] ... [SEP] (BERT), <s> ... </s> (RoBERTa): the official code takes encode('')[0] and [1].
        self.head = list(specials[:1])
        self.tail = list(specials[1:])
        mask_id = tokenizer.mask_token_id
        in_prefix = [i for i, t in enumerate(self.prefix) if t == mask_id]
        in_suffix = [i for i, t in enumerate(self.suffix) if t == mask_id]
        if len(in_prefix) + len(in_suffix) != 1:
            raise ConfigError(
                f"{where} '{template}' does not tokenise to exactly one {mask} token with this model's tokenizer; "
                "keep {mask} apart from other text."
            )
        # Position of [MASK] in a row: fixed if it is in the prefix, else counted from the sentence's end.
        self.mask_in_prefix = bool(in_prefix)
        self.mask_offset = len(self.head) + in_prefix[0] if in_prefix else in_suffix[0]
        self.start = len(self.head) + len(self.prefix)  # first sentence token
        self.overhead = len(self.head) + len(self.prefix) + len(self.suffix) + len(self.tail)

    def row(self, sentence: Sequence[int]) -> list[int]:
        return [*self.head, *self.prefix, *sentence, *self.suffix, *self.tail]

    def mask_position(self, length: int) -> int:
        return self.mask_offset if self.mask_in_prefix else self.start + length + self.mask_offset

    def empty(self) -> tuple[list[int], int]:
        """The empty template's ids and the index of its first shifted position (the suffix)."""
        return self.row([]), self.start


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


class PromptTransformer(Transformer):
    """A :class:`~sentence_transformers.base.modules.Transformer` whose sentence embedding is the
    ``[MASK]`` state of the template-wrapped sentence (see the module docstring).

    It is the whole encoder: no Pooling module follows it (the training model adds only the
    train-only head). ``encode`` wraps with ``prompt_template`` (the evaluation layout); the
    training collator (:meth:`hardcse.models.representation.Prompted.collator`) and
    :meth:`two_views` build the training layout of both templates, and
    :meth:`forward` subtracts the template denoising term for rows that carry their sentence
    length (training rows) when ``prompt_denoise`` is on.

    Args:
        model_name_or_path: as for ``Transformer``.
        prompt_template: view 1's template, also the one used to encode (default: the official one).
        prompt_template2: view 2's template (default: :data:`PROMPT_TEMPLATE2`).
        prompt_denoise: subtract the empty-template ``[MASK]`` state in training (official: on).
        **kwargs: passed to ``Transformer`` (``max_seq_length`` is the sentence's token limit).
    """

    config_keys = [*Transformer.config_keys, "prompt_template", "prompt_template2", "prompt_denoise"]

    def __init__(
        self,
        model_name_or_path: str,
        *,
        prompt_template: str | None = None,
        prompt_template2: str | None = None,
        prompt_denoise: bool = True,
        **kwargs: Any,
    ) -> None:
        self.prompt_template = prompt_template or PROMPT_TEMPLATE
        self.prompt_template2 = prompt_template2 or PROMPT_TEMPLATE2
        self.prompt_denoise = bool(prompt_denoise)
        split_template(self.prompt_template, "prompt_template")
        split_template(self.prompt_template2, "prompt_template2")
        super().__init__(model_name_or_path, **kwargs)
        tokenizer = self.tokenizer
        if tokenizer is None or tokenizer.mask_token is None or tokenizer.mask_token_id is None:
            raise ConfigError(
                f"model '{model_name_or_path}' has no mask token, so it cannot take the prompt representation "
                "(the [MASK] state); use a masked-language model such as BERT or RoBERTa, or turn prompt off."
            )
        self._layouts = (
            _Layout(tokenizer, self.prompt_template, "prompt_template"),
            _Layout(tokenizer, self.prompt_template2, "prompt_template2"),
        )

    # -- encoding (evaluation layout) ----------------------------------------------------
    @property
    def pooling_name(self) -> str:
        """How the sentence vector is read, for result files and cards."""
        return PROMPT_POOLING_NAME

    def _row_limit(self) -> int | None:
        """The longest row the position embeddings take (``max_position_embeddings`` less the
        RoBERTa-style offset), or ``None`` if unknown."""
        config = self.model.config
        config = config.get_text_config() if hasattr(config, "get_text_config") else config
        limit = getattr(config, "max_position_embeddings", None)
        if not isinstance(limit, int) or limit <= 0:
            return None
        padding_idx = getattr(getattr(self.model, "embeddings", None), "padding_idx", None)
        if isinstance(padding_idx, int) and padding_idx >= 0:
            limit -= padding_idx + 1
        return limit

    def preprocess(self, inputs: Sequence[Any], prompt: str | None = None, **kwargs: Any) -> dict[str, Tensor]:
        """Tokenise ``inputs`` as ``evaluation_prompt.py`` does: final "." added where missing, the
        view-1 template around the sentence, the whole text tokenised with special tokens.

        A sentence is cut (inside the template) to ``max_seq_length`` tokens plus the template's,
        and never beyond what the position embeddings take, so ``[MASK]`` is always kept.
        """
        if not inputs:
            return {}
        texts = []
        for item in inputs:
            if not isinstance(item, str):
                raise DataError(f"a prompt model encodes text only, got {type(item).__name__}.")
            text = (prompt or "") + item
            mask = self.tokenizer.mask_token
            wrapped = self.prompt_template.replace("{mask}", mask).replace("{sentence}", add_final_period(text))
            texts.append(wrapped.strip())
        rows = self.tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]
        layout = self._layouts[0]
        limit = None if self.max_seq_length is None else self.max_seq_length + layout.overhead
        positions = self._row_limit()
        if positions is not None:
            limit = positions if limit is None else min(limit, positions)
        rows = [_cut(row, limit, layout) for row in rows]
        return _pad(rows, self.tokenizer.pad_token_id or 0)

    # -- training layout -------------------------------------------------------------------
    def preprocess_sentences(self, inputs: Sequence[str], **kwargs: Any) -> dict[str, Tensor]:
        """The training collator's tokenisation: each sentence alone, without special tokens, cut to
        ``max_seq_length`` tokens (``train_prompt.py``); :meth:`two_views` wraps it."""
        texts = [t if isinstance(t, str) and t else " " for t in inputs]  # the official code's None -> " "
        ids = self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        limit = self.max_seq_length
        ids = [list(row[:limit]) if limit is not None else list(row) for row in ids]
        padded = _pad(ids, self.tokenizer.pad_token_id or 0)
        padded[RAW_KEY] = torch.ones(len(ids), dtype=torch.long)
        return padded

    def two_views(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        """The 2N training rows of a batch of ``preprocess_sentences`` features: rows ``i`` and
        ``N + i`` are sentence i in templates 1 and 2, each with its sentence length, view and
        ``[MASK]`` position. Features without raw sentences are stacked on themselves."""
        if RAW_KEY not in features:
            return {k: torch.cat([v, v], dim=0) if torch.is_tensor(v) else v for k, v in features.items()}
        return self.wrap(features, views=(0, 1))

    def wrap(self, features: dict[str, Tensor], views: Sequence[int] = (0,)) -> dict[str, Tensor]:
        """Rows of the raw sentences in each template of ``views`` (in that order)."""
        ids, mask = features["input_ids"], features["attention_mask"]
        device = ids.device
        lengths = mask.sum(dim=1).tolist()
        sentences = [row[:n] for row, n in zip(ids.tolist(), lengths, strict=True)]
        rows, length, view, where = [], [], [], []
        for v in views:
            layout = self._layouts[v]
            for sentence in sentences:
                rows.append(layout.row(sentence))
                length.append(len(sentence))
                view.append(v)
                where.append(layout.mask_position(len(sentence)))
        out = {k: t.to(device) for k, t in _pad(rows, self.tokenizer.pad_token_id or 0).items()}
        out[LENGTH_KEY] = torch.tensor(length, dtype=torch.long, device=device)
        out[VIEW_KEY] = torch.tensor(view, dtype=torch.long, device=device)
        out[MASK_POSITION_KEY] = torch.tensor(where, dtype=torch.long, device=device)
        return out

    def template_states(self, views: Tensor, lengths: Tensor) -> Tensor:
        """``delta_v(L)`` for every row (``views``/``lengths``: one entry per row): the ``[MASK]``
        state of the empty template ``v`` with its suffix positions shifted by ``L``; one encoder
        pass over the distinct (v, L) pairs, with gradient (the module docstring)."""
        key = views * 100_000 + lengths
        unique, inverse = torch.unique(key, return_inverse=True)
        rows, positions, where = [], [], []
        for k in unique.tolist():
            v, length = divmod(k, 100_000)
            ids, shift_from = self._layouts[v].empty()
            pos = list(range(len(ids)))
            pos[shift_from:] = [p + length for p in pos[shift_from:]]
            rows.append(ids)
            positions.append(pos)
            where.append(self._layouts[v].mask_position(0))
        device = views.device
        batch = {k: t.to(device) for k, t in _pad(rows, self.tokenizer.pad_token_id or 0).items()}
        width = batch["input_ids"].shape[1]
        position_ids = torch.tensor([p + [0] * (width - len(p)) for p in positions], dtype=torch.long, device=device)
        out = self.model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=position_ids,
            return_dict=True,
        )
        states = out.last_hidden_state[torch.arange(len(rows), device=device), torch.tensor(where, device=device)]
        return states[inverse]

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Encode; ``sentence_embedding`` is the ``[MASK]`` state, less ``delta_v(L)`` for training
        rows when ``prompt_denoise`` is on."""
        features = dict(features)
        if RAW_KEY in features:  # raw sentences encoded directly (not through two_views): view 1
            features = self.wrap(features)
        length = features.pop(LENGTH_KEY, None)
        view = features.pop(VIEW_KEY, None)
        where = features.pop(MASK_POSITION_KEY, None)
        input_ids = features.get("input_ids")
        features = super().forward(features, **kwargs)
        hidden = features["token_embeddings"]
        if where is None:
            where = self._mask_positions(input_ids)
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), where.to(hidden.device)]
        if length is not None and view is not None and self.prompt_denoise:
            pooled = pooled - self.template_states(view, length).to(pooled.dtype)
        features["sentence_embedding"] = pooled
        return features

    def _mask_positions(self, input_ids: Tensor | None) -> Tensor:
        """Per row, the template's ``[MASK]``: the last one when the template has it after the
        sentence, the first one otherwise (a sentence may contain the mask token's text)."""
        if input_ids is None:
            raise DataError("a prompt model needs input_ids to find the [MASK] token; encode text with it.")
        is_mask = input_ids == self.tokenizer.mask_token_id
        if not bool(is_mask.any(dim=1).all()):
            raise DataError(
                "an input row has no mask token, so the prompt model has no sentence vector for it; encode plain "
                "text (the model adds its template)."
            )
        index = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        if self._layouts[0].mask_in_prefix:
            return torch.where(is_mask, index, input_ids.shape[1]).min(dim=1).values
        return torch.where(is_mask, index, -1).max(dim=1).values


def _cut(row: list[int], limit: int | None, layout: _Layout) -> list[int]:
    """``row`` cut to ``limit`` tokens by dropping the sentence's last tokens (the template's
    suffix, with ``[MASK]``, and the special tokens stay)."""
    if limit is None or len(row) <= limit:
        return row
    excess = len(row) - limit
    end = len(row) - len(layout.suffix) - len(layout.tail)  # first suffix token
    start = max(layout.start, end - excess)
    return row[:start] + row[end:]


def _pad(rows: Sequence[Sequence[int]], pad_id: int) -> dict[str, Tensor]:
    """Right-padded ``input_ids`` and ``attention_mask`` of ``rows``."""
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
    return {"input_ids": ids, "attention_mask": mask}


# -- loading an exported prompt model ----------------------------------------------------------

#: hardcse module classes an exported model may name in modules.json (resolved here, not imported
#: by name from the file, so loading runs no code the model directory chooses).
HARDCSE_MODULES: dict[str, type] = {f"{PromptTransformer.__module__}.{PromptTransformer.__name__}": PromptTransformer}


def hardcse_module_types(path: str | Path) -> list[str] | None:
    """The hardcse module types named in ``path/modules.json`` (``None``: no such file)."""
    file = Path(path) / "modules.json"
    if not file.is_file():
        return None
    try:
        entries = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return [e.get("type", "") for e in entries if isinstance(e, dict) and str(e.get("type", "")).startswith("hardcse.")]


def load_prompt_model(path: str | Path, device: str | None = None) -> Any:
    """A saved model whose ``modules.json`` names hardcse modules, as a ``SentenceTransformer``.

    sentence-transformers >= 6 imports a module class outside its own package only with
    ``trust_remote_code=True``; hardcse resolves its own classes from the installed package instead
    (:data:`HARDCSE_MODULES`), and sentence-transformers' classes by their dotted names.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util.misc import import_from_string

    path = Path(path)
    entries = json.loads((path / "modules.json").read_text(encoding="utf-8"))
    modules = []
    for entry in entries:
        ref = entry["type"]
        if ref in HARDCSE_MODULES:
            cls = HARDCSE_MODULES[ref]
        elif ref.startswith("sentence_transformers."):
            cls = import_from_string(ref)
        else:
            raise DataError(
                f"model '{path}' names the module class '{ref}', neither hardcse's nor sentence-transformers'; "
                "load it with trust_remote_code if you trust its code."
            )
        modules.append(cls.load(str(path), subfolder=entry.get("path", "")))
    return SentenceTransformer(modules=modules, device=device)
