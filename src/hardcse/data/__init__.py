"""Data: where it lives, the STS/SICK evaluation loaders and the download of the official releases."""

from __future__ import annotations

from hardcse.data.paths import DATA_ENV, DEFAULT_DATA_DIR, resolve_data_dir
from hardcse.data.sts import TASK_ALIASES, TASKS, STSPairs, canonical_task, load_task, load_tasks

__all__ = [
    "DATA_ENV",
    "DEFAULT_DATA_DIR",
    "TASKS",
    "TASK_ALIASES",
    "STSPairs",
    "canonical_task",
    "load_task",
    "load_tasks",
    "resolve_data_dir",
]
