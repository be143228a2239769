"""Loading any encoder for evaluation as a :class:`~sentence_transformers.SentenceTransformer`.

* A sentence-transformers model (a directory or hub repository with ``modules.json``) keeps its
  own modules and pooling, unless ``pooling`` is given.
* A plain Hugging Face model (``config.json`` only, e.g. a converted SimCSE checkpoint) becomes
  ``Transformer + Pooling``, with ``cls`` pooling by default, which is how SimCSE evaluates
  unsupervised models (``--pooler cls_before_pooler``).
* Given ``pooling``, an ST model is rebuilt as its Transformer module plus a new Pooling module;
  any Dense/Normalize modules after it are dropped (cosine similarity does not depend on the
  scale, and a Dense head would not fit a different pooling anyway).

Pooling names: ``cls`` and ``cls_before_pooler`` (SimCSE's name) both take the raw last-layer
hidden state of the first token. Neither applies BERT's trained ``pooler`` (dense + tanh), i.e.
SimCSE's ``--pooler cls`` for *supervised* checkpoints is not reproduced. ``mean`` (alias
``avg``) averages the non-padding tokens, ``max`` takes their element-wise maximum,
``lasttoken`` the last non-padding token and ``weightedmean`` a position-weighted mean.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Transformer
from sentence_transformers.sentence_transformer.modules import Pooling

from hardcse.errors import ConfigError, DataError
from hardcse.models.defaults import display_name, resolve_model_name

logger = logging.getLogger(__name__)

#: Accepted ``pooling`` values -> sentence-transformers Pooling mode.
POOLING_MODES: dict[str, str] = {
    "cls": "cls",
    "cls_before_pooler": "cls",
    "mean": "mean",
    "avg": "mean",
    "max": "max",
    "lasttoken": "lasttoken",
    "weightedmean": "weightedmean",
}

#: The ``pooling`` choices, for help texts.
POOLING_CHOICES: tuple[str, ...] = tuple(POOLING_MODES)

#: Pooling of a plain Hugging Face model when none is given (SimCSE's evaluation of unsupervised models).
DEFAULT_HF_POOLING = "cls"


def check_pooling(pooling: str | None) -> str | None:
    """Return ``pooling`` lower-cased, or raise :class:`ConfigError` if it is not a known choice."""
    if pooling is None:
        return None
    key = pooling.strip().lower()
    if key not in POOLING_MODES:
        raise ConfigError(f"unknown pooling '{pooling}'; choose one of {', '.join(POOLING_CHOICES)}.")
    return key


def _hub_resolvable() -> bool:
    """False when the hub's host name cannot even be resolved (no network): then only the local
    cache is asked, instead of waiting through the hub client's retries."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def _locate(name: str) -> str:
    """Return ``"st"`` or ``"hf"`` for a loadable model, or raise :class:`DataError`."""
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "modules.json").is_file():
            return "st"
        if (path / "config.json").is_file():
            return "hf"
        raise DataError(
            f"model directory {path} has neither modules.json (sentence-transformers) nor config.json "
            "(Hugging Face); point to a saved model directory."
        )
    if path.exists():
        raise DataError(f"model path {path} is a file, not a model directory; point to the directory.")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HFValidationError

    local_only = not _hub_resolvable()
    for filename, kind in (("modules.json", "st"), ("config.json", "hf")):
        try:
            hf_hub_download(name, filename, local_files_only=local_only)
            return kind
        except HFValidationError:
            raise DataError(
                f"model '{name}' not found: not a local directory, and not a valid Hugging Face hub name; "
                "check the path."
            ) from None
        except Exception:  # offline, no such repository or file: try the next file, then give up
            continue
    raise DataError(
        f"model '{name}' not found: not a local directory, and the Hugging Face hub could not provide it "
        "(offline?); check the path or name."
    )


def check_model_weights(name_or_path: str | Path) -> None:
    """Refuse a local model directory whose weight files cannot be read, before any slow work.

    Each ``*.safetensors`` file's header is opened (cheap: it checks that the file covers every
    tensor, so a truncated or empty file is caught); a PyTorch ``.bin`` must at least be a
    non-empty archive. Hub names are left to the loader.
    """
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        return
    files = [p for p in sorted(path.glob("*")) + sorted(path.glob("*/*")) if p.is_file()]
    for file in files:
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            try:
                with safe_open(str(file), "pt"):
                    pass
            except Exception as err:  # noqa: BLE001 - SafetensorError, OSError: all mean unreadable
                detail = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise DataError(
                    f"model weights '{file}' are unreadable ({detail}); the file is truncated or corrupt, "
                    "so save or download the model again."
                ) from None
        elif file.name == "pytorch_model.bin" or file.suffix == ".bin" and file.name.startswith("pytorch_model"):
            import zipfile

            if file.stat().st_size == 0 or not zipfile.is_zipfile(file):
                raise DataError(
                    f"model weights '{file}' are unreadable (empty or not a PyTorch archive); the file is truncated "
                    "or corrupt, so save or download the model again."
                )


#: Files holding a tokenizer's vocabulary: a local model directory needs at least one of them.
VOCABULARY_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "sentencepiece.model",
    "tokenizer.model",
    "spm.model",
)


def transformer_folders(path: Path) -> list[Path]:
    """Where the tokenizer of the local model ``path`` may be: ``path`` itself and, for a
    sentence-transformers directory, the folder of its Transformer module (``modules.json``)."""
    folders = [path]
    modules = path / "modules.json"
    if not modules.is_file():
        return folders
    try:
        entries = json.loads(modules.read_text(encoding="utf-8"))
        if not isinstance(entries, list):
            raise ValueError("not a list")
        for entry in entries:
            if str(entry.get("type", "")).endswith("Transformer") and str(entry.get("path", "")):
                folders.append(path / str(entry["path"]))
    except (OSError, ValueError, AttributeError, TypeError, UnicodeDecodeError):
        raise DataError(
            f"'{modules}' is not a valid sentence-transformers module list (a JSON list of modules); save or "
            "download the model again."
        ) from None
    return folders


def check_tokenizer_files(name_or_path: str | Path) -> None:
    """Refuse a local model directory without tokenizer files (one sentence).

    transformers would build a tokenizer of a handful of special tokens instead, so every word
    becomes [UNK]: training and scores would run and be meaningless. Hub names are left to the loader.
    """
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        return
    folders = transformer_folders(path)
    if not any((folder / name).is_file() for folder in folders for name in VOCABULARY_FILES):
        raise DataError(
            f"model directory '{path}' has no tokenizer files ({', '.join(VOCABULARY_FILES[:3])}, ...), so every "
            "word would become an unknown token; copy the tokenizer files of its base model into it."
        )


def _local_dir(name: str) -> str:
    """``name`` itself if it is a local directory, else its hub snapshot in the local cache."""
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    from huggingface_hub import snapshot_download

    return snapshot_download(name, local_files_only=not _hub_resolvable())


def _hardcse_modules(name: str) -> bool:
    """Whether the saved model ``name`` names hardcse module classes in its ``modules.json``."""
    from hardcse.models.prompt import hardcse_module_types

    local = Path(name).expanduser()
    if local.is_dir():
        return bool(hardcse_module_types(local))
    from huggingface_hub import hf_hub_download

    try:
        file = hf_hub_download(name, "modules.json", local_files_only=not _hub_resolvable())
    except Exception:  # noqa: BLE001 - offline or no such file: an ordinary model then
        return False
    return bool(hardcse_module_types(Path(file).parent))


def describe_pooling(model: SentenceTransformer) -> str:
    """The pooling of ``model`` as a short name (``mean``, ``cls``, ...; ``none`` without Pooling)."""
    for module in model:
        if isinstance(module, Pooling):
            mode = module.pooling_mode
            return mode if isinstance(mode, str) else "+".join(mode)
        name = getattr(module, "pooling_name", None)  # an encoder that pools itself (the prompt encoder)
        if isinstance(name, str):
            return name
    return "none"


def load_sentence_model(
    name_or_path: str,
    pooling: str | None = None,
    trust_remote_code: bool = False,
    device: str | None = None,
) -> SentenceTransformer:
    """Load ``name_or_path`` (``"default"`` = the bundled all-MiniLM-L6-v2) for encoding sentences.

    Args:
        name_or_path: a local directory, a Hugging Face hub name, or ``"default"``.
        pooling: one of :data:`POOLING_CHOICES`; ``None`` keeps an ST model's own pooling and
            gives a plain HF model ``cls`` pooling.
        trust_remote_code: allow custom model code from the hub.
        device: ``"cpu"``, ``"cuda"``, ...; ``None`` lets sentence-transformers choose.

    Raises:
        ConfigError: unknown pooling, or a pooling override on a model without a Transformer module.
        DataError: the model cannot be found locally or on the hub.
    """
    pooling = check_pooling(pooling)
    name = resolve_model_name(name_or_path)
    kind = _locate(name)
    check_model_weights(name)
    check_tokenizer_files(name)
    remote = {"trust_remote_code": True} if trust_remote_code else {}

    if kind == "st" and _hardcse_modules(name):
        # hardcse's own module classes (the prompt encoder): resolved from the installed package,
        # which sentence-transformers >= 6 would only import with trust_remote_code.
        if pooling is not None:
            raise ConfigError(
                f"'{display_name(name_or_path)}' is a prompt model, whose vector is the [MASK] state of its template; "
                "evaluate it without --pooling."
            )
        from hardcse.models.prompt import load_prompt_model

        try:
            return load_prompt_model(_local_dir(name), device=device)
        except (OSError, ValueError, KeyError) as err:
            raise DataError(
                f"model '{display_name(name_or_path)}' could not be loaded ({str(err).strip().splitlines()[0][:200]})."
            ) from None
    if kind == "st":
        try:
            model = SentenceTransformer(name, device=device, trust_remote_code=trust_remote_code)
        except (OSError, ValueError, KeyError) as err:  # a broken config or missing module files
            raise DataError(
                f"model '{display_name(name_or_path)}' could not be loaded ({str(err).strip().splitlines()[0][:200]})."
            ) from None
        if pooling is None:
            return model
        first = model[0]
        if not isinstance(first, Transformer):
            raise ConfigError(
                f"cannot change the pooling of '{display_name(name_or_path)}': its first module is "
                f"{type(first).__name__}, not a Transformer; evaluate it without --pooling."
            )
        dropped = [type(m).__name__ for m in list(model)[1:] if not isinstance(m, Pooling)]
        if dropped:
            logger.info("pooling override: dropping modules %s", ", ".join(dropped))
        transformer = first
    else:
        try:
            transformer = Transformer(
                name, model_kwargs=dict(remote), processor_kwargs=dict(remote), config_kwargs=dict(remote)
            )
        except (OSError, ValueError, KeyError) as err:  # no weights, a config transformers cannot read
            raise DataError(
                f"model '{display_name(name_or_path)}' could not be loaded ({str(err).strip().splitlines()[0][:200]})."
            ) from None
    mode = POOLING_MODES[pooling or DEFAULT_HF_POOLING]
    pool = Pooling(transformer.get_embedding_dimension(), pooling_mode=mode)
    return SentenceTransformer(modules=[transformer, pool], device=device)
