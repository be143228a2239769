"""The untrained encoder's evaluation (the *start*): computed, stored and shared in one place.

Before its first step a run scores its encoder as it will be trained (its pooling, or a prompt's
``[MASK]`` state) on the run's test tasks and test pair sets, and on its dev set. That is the
untrained row of the reports and the step-0 point of the curves.

Files (their formats are kept: finished runs and resumable comparisons read them):

* ``RUN/start.json`` (:data:`START_FILE`): ``evaluate_model``'s dict (``model``, ``pooling``,
  ``tasks``, ``avg``) with ``pairs`` (each test pair set's score), ``pair_cosines`` (the per-pair
  cosines of the test pair sets, for the comparison's paired bootstrap) and ``stsb_dev``. A
  resumed run keeps it; ``results.json`` reports it without ``pair_cosines``
  (:func:`start_summary`).
* ``COMPARISON/start-<key>.json`` (:class:`SharedStart`): the same, shared by every run of a
  comparison with the same :func:`start_key` (model, pooling or prompt, test tasks and pairs,
  data, batch size), so the untrained encoder is scored once per comparison.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hardcse import process_group as dist
from hardcse.io import atomic_write_json

if TYPE_CHECKING:  # importing this module (the comparison does) loads no model library
    from sentence_transformers import SentenceTransformer

    from hardcse.training.config import TrainConfig

START_FILE = "start.json"
#: A comparison's shared start files are ``start-<key>.json``.
SHARED_PREFIX = "start-"


def start_key(config: TrainConfig) -> str:
    """What the untrained encoder's evaluation depends on, hashed (runs sharing it share start.json)."""
    values = {
        "model": config.model,
        **config.representation.identity(),  # pooling; a prompt's templates (keys of plain runs unchanged)
        "test_tasks": config.test_tasks,
        "data_dir": config.data_dir,
        "eval_batch_size": config.eval_batch_size,  # batches change padding, hence the last digits
        "trust_remote_code": config.trust_remote_code,
    }
    if config.dev or config.test:  # own pairs: their start scores too (keys of runs without them unchanged)
        values.update(dev=config.dev, test=config.test, pair_columns=config.pair_columns)
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:10]


def is_shared_start_file(path: Path) -> bool:
    """True for a comparison's ``start-<key>.json``."""
    return path.name.startswith(SHARED_PREFIX) and path.suffix == ".json"


def score_start(
    model: SentenceTransformer,
    evaluator: Callable[[SentenceTransformer], dict],
    config: TrainConfig,
    test_data: dict,
    test_sets: list[Any],
    *,
    bars: bool,
    model_name: str,
    pooling: str,
) -> dict:
    """Score the untrained ``model``: the test tasks and pair sets
    (:func:`~hardcse.training.scoring.score_tests`), the pair sets' per-pair cosines and the dev
    score of ``evaluator`` (the run's dev evaluator)."""
    from hardcse.training.scoring import score_tests

    start, start_pairs = score_tests(model, config, test_data, test_sets, bars, model_name, pooling)
    start["pair_cosines"] = {name: cos.tolist() for name, (_, cos) in start_pairs.items()}
    start["stsb_dev"] = float(evaluator(model)["stsb_spearman"])
    return start


def run_start(
    out: Path, given: dict | None, *, pooling: str, resume: bool, main: bool, score: Callable[[], dict]
) -> dict:
    """The start a run reports, written to ``out/start.json`` by the main process (the others wait
    for it and read it).

    It is ``given`` (a comparison's shared start) when that was scored with this run's
    representation ``pooling`` (a start scored with another one, e.g. ``[CLS]`` for a prompt run,
    is scored again); else, on ``resume``, the run's own ``start.json``; else ``score()``.
    """
    path = out / START_FILE
    start = given if given is not None and given.get("pooling") == pooling else None
    if start is not None:
        if main:
            atomic_write_json(path, start)
    elif resume and path.is_file():
        start = json.loads(path.read_text(encoding="utf-8"))
    elif main:
        start = score()
        atomic_write_json(path, start)
    dist.barrier()
    if start is None:
        start = json.loads(path.read_text(encoding="utf-8"))
    return start


def start_summary(start: dict) -> dict:
    """The start as ``results.json`` reports it: without the per-pair cosines."""
    return {k: v for k, v in start.items() if k != "pair_cosines"}


def read_start(run_dir: Path) -> dict | None:
    """A run's ``start.json`` (None when it is missing or unreadable)."""
    return _read_json(Path(run_dir) / START_FILE)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class SharedStart:
    """The start shared by the runs of a comparison with the same :func:`start_key`:
    ``directory/start-<key>.json``, handed to each run as :func:`run_start`'s ``given``."""

    def __init__(self, directory: Path, config: TrainConfig, run_dir: Path) -> None:
        self.path = Path(directory) / f"{SHARED_PREFIX}{start_key(config)}.json"
        self.run_file = Path(run_dir) / START_FILE
        self.values: dict | None = None

    def read(self) -> dict | None:
        """The shared start, else the start of an interrupted run of this key (shared from now on);
        None when there is neither."""
        self.values = _read_json(self.path)
        if self.values is None and self.run_file.is_file():
            self.values = _read_json(self.run_file)  # an interrupted run already scored the untrained model
            if self.values is not None:
                atomic_write_json(self.path, self.values)
        return self.values

    def share_run_start(self) -> None:
        """After the run: share the start it scored itself when :meth:`read` found none."""
        if self.values is None and self.run_file.is_file():
            atomic_write_json(self.path, json.loads(self.run_file.read_text(encoding="utf-8")))
