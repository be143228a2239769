"""Loading the backbone of a training model, and the training model's clean export.

The training model is built by its representation (:mod:`hardcse.models.representation`):
Transformer (max length 32 by default, as the official scripts) -> Pooling(cls) ->
:class:`~hardcse.models.head.TrainOnlyHead` for plain pooling. The export drops the train-only
head, so plain ``SentenceTransformer(path)`` (and MTEB) loads a plain model with the pooling it
was trained for.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules.transformer import Transformer

from hardcse.errors import ConfigError
from hardcse.models.defaults import resolve_model_name
from hardcse.models.head import TrainOnlyHead
from hardcse.models.loading import check_model_weights, check_tokenizer_files


def load_transformer(
    kind: type[Transformer],
    model: str | None,
    *,
    max_seq_length: int = 32,
    dropout: float | None = None,
    trust_remote_code: bool = False,
    **kwargs: Any,
) -> Transformer:
    """The transformer module ``kind`` (``Transformer`` or a subclass such as the prompt encoder)
    loaded from a Hugging Face name/path or an ST directory (``None``/``"default"``: the bundled
    model), with one clear error for a directory that is no model or a name that cannot be loaded.

    ``dropout`` overrides both of the backbone's dropout probabilities; ``kwargs`` go to ``kind``.
    """
    path = resolve_model_name(model)
    local = Path(path).expanduser()
    if local.is_dir():
        if not ((local / "config.json").is_file() or (local / "modules.json").is_file()):
            raise ConfigError(
                f"model directory '{local}' has neither config.json (Hugging Face) nor modules.json "
                "(sentence-transformers); point --model to a saved model directory."
            )
        check_model_weights(local)
        check_tokenizer_files(local)
    elif local.exists():
        raise ConfigError(f"model path '{local}' is a file, not a model directory; point --model to the directory.")
    config_kwargs = {}
    if dropout is not None:
        config_kwargs = {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
    try:
        return kind(
            path,
            **kwargs,
            max_seq_length=max_seq_length,
            config_kwargs=config_kwargs or None,
            model_kwargs={"trust_remote_code": trust_remote_code, "attn_implementation": "sdpa"},
            processor_kwargs={"trust_remote_code": trust_remote_code},
        )
    except (OSError, ValueError, KeyError) as err:
        # OSError: not found on disk or the hub; ValueError/KeyError: an unknown or broken config.
        where = "a local directory" if os.path.exists(path) else "not a local directory"
        raise ConfigError(
            f"model '{model}' could not be loaded ({where}; the Hugging Face hub could not provide it: "
            f"{str(err).splitlines()[0]})."
        ) from None


def export_model(model: SentenceTransformer, path: str | Path, eval_max_seq_length: int | None = None) -> None:
    """Save Transformer + Pooling of ``model`` (no train-only head) in sentence-transformers format.

    ``eval_max_seq_length`` replaces the training truncation length (32) in the saved model, so
    users encoding with it are not silently cut at 32 tokens.
    """
    modules = [m for m in model if not isinstance(m, TrainOnlyHead)]
    clean = SentenceTransformer(modules=modules, device=str(model.device))
    old = clean.max_seq_length
    if eval_max_seq_length is not None:
        clean.max_seq_length = eval_max_seq_length
    try:
        clean.save(str(path), create_model_card=True)
    finally:
        clean.max_seq_length = old


def position_limit(model: SentenceTransformer) -> int | None:
    """The longest input (in tokens) the model's position embeddings allow, if known.

    ``max_position_embeddings`` of the transformer config, minus the offset of models whose
    positions start after the padding index (RoBERTa, MPNet: 514 -> 512).
    """
    auto_model = getattr(model[0], "auto_model", None)
    config = getattr(auto_model, "config", None)
    if config is None:
        return None
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    limit = getattr(config, "max_position_embeddings", None)
    if not isinstance(limit, int) or limit <= 0:
        return None
    padding_idx = getattr(getattr(auto_model, "embeddings", None), "padding_idx", None)
    if isinstance(padding_idx, int) and padding_idx >= 0:
        limit -= padding_idx + 1
    return limit
