"""Shared test fixtures.

Tests never reach the network: ``HF_HUB_OFFLINE`` is set before anything imports the hub client.
The STS/SICK data is taken from ``$HARDCSE_DATA`` or, next to the repository, ``../shared/data``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The data directory the tests use: ``$HARDCSE_DATA``, else ``<repo>/../shared/data``."""
    env = os.environ.get("HARDCSE_DATA")
    return Path(env).expanduser() if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real STS/SICK data (SentEval layout under ``senteval/``); skips the test when absent."""
    path = shared_data_dir()
    if not (path / "senteval" / "STS").is_dir():
        pytest.skip(f"no STS data in {path} (set HARDCSE_DATA)")
    return path
