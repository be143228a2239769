"""Scoring a model on MTEB's versions of the seven STS tasks (optional extra ``hardcse[mteb]``).

MTEB's STS12-16 and STS-B test sets have the same pair counts as SentEval's and MTEB pools each
one into a single cosine Spearman, which is SentEval's ``all`` setting. Its SICK-R is different:
it scores all 9,927 SICK pairs, where the papers score the 4,927-pair test split, so that column
is not comparable with the literature (``docs/mteb.md``). The data comes from the Hugging Face
hub (``mteb/sts12-sts`` ...), pinned by revision, or from the ``datasets`` cache filled by an
earlier online run; it is not tokenised or lower-cased as SentEval's copy is.

When the hub cannot even be resolved, the data is looked up in the local cache only, so an
offline machine gets one clear sentence at once instead of minutes of download retries.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sentence_transformers import SentenceTransformer

from hardcse.data.sts import TASKS, canonical_task
from hardcse.errors import ConfigError, DataError
from hardcse.evaluation.scoring import average

#: hardcse's canonical task name -> MTEB's task name.
MTEB_TASK_NAMES: dict[str, str] = {
    "STS12": "STS12",
    "STS13": "STS13",
    "STS14": "STS14",
    "STS15": "STS15",
    "STS16": "STS16",
    "STSBenchmark": "STSBenchmark",
    "SICKRelatedness": "SICK-R",
}

#: The one sentence printed next to MTEB results that include SICK-R.
SICKR_NOTE = (
    "note: MTEB's SICK-R scores all 9,927 SICK pairs, the papers only the 4,927-pair test split; "
    "compare that column with hardcse evaluate without --mteb."
)

_INSTALL_HINT = "install it with: pip install 'hardcse[mteb]'"


def require_mteb() -> Any:
    """Import and return the ``mteb`` module, or raise :class:`ConfigError` saying how to install it."""
    try:
        import mteb
    except ImportError:
        raise ConfigError(f"--mteb needs the optional package mteb, which is not installed; {_INSTALL_HINT}.") from None
    if not hasattr(mteb, "evaluate") or not hasattr(mteb, "get_task"):
        version = getattr(mteb, "__version__", "?")
        raise ConfigError(
            f"--mteb needs mteb 2 or newer (mteb.evaluate), but mteb {version} is installed; {_INSTALL_HINT}."
        )
    return mteb


@contextmanager
def _cache_only_when_unreachable() -> Iterator[None]:
    """Within the block, let ``datasets`` and the hub client use only the local cache when the hub's
    host cannot be resolved (they read these flags at call time; the environment variables only at
    import)."""
    from hardcse.models.loading import _hub_resolvable

    if _hub_resolvable():
        yield
        return
    import datasets.config
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved


def _load(task: Any, name: str) -> None:
    """Load ``task``'s data, turning whatever the hub, cache or ``datasets`` raise into one sentence."""
    source = task.metadata.dataset.get("path", "?")
    try:
        with _cache_only_when_unreachable():
            task.load_data()
    except Exception as err:  # connection, cache miss, DatasetNotFoundError, ...: all mean "no data here"
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataError(
            f"MTEB could not load the data of {name} ({source}) from the Hugging Face hub or the local datasets "
            f"cache ({reason}); run once with network access to fill the cache, or evaluate without --mteb "
            "(SentEval data from hardcse download)."
        ) from None


def _pairs(task: Any) -> int | None:
    try:
        return len(task.dataset["test"])
    except (KeyError, TypeError, AttributeError):
        return None


def _name(model: SentenceTransformer) -> str:
    config = getattr(getattr(model[0], "auto_model", None), "config", None)
    return str(getattr(config, "_name_or_path", "") or type(model).__name__)


def evaluate_mteb(
    model: SentenceTransformer,
    tasks: Sequence[str] | None = None,
    batch_size: int = 128,
    show_progress: bool = False,
    model_name: str | None = None,
    pooling: str | None = None,
    datasets: Mapping[str, Any] | None = None,
) -> dict:
    """Score ``model`` with MTEB on its STS12-16, STSBenchmark and SICK-R test sets.

    Args:
        model: a sentence-transformers model; encoded with its own pooling.
        tasks: hardcse task names or aliases (default: all seven).
        batch_size: sentences per forward pass.
        show_progress: show MTEB's progress bars.
        model_name: the name stored in the result.
        pooling: the pooling name stored in the result (default: read from the model).
        datasets: ready data per task, ``{task: DatasetDict with a "test" split of sentence1,
            sentence2, score}``, used instead of MTEB's download (offline copies, tests).

    Returns:
        The shape of :func:`hardcse.evaluation.sts.evaluate_model`'s result: ``{"model",
        "pooling", "source": "mteb", "mteb_version", "aggregation": "all", "split": "test",
        "tasks": {task: {"spearman", "pairs"}}, "avg", "seconds"}``; ``spearman`` is MTEB's
        ``cosine_spearman`` x 100, ``avg`` the mean of the two-decimal task values.

    Raises:
        ConfigError: mteb is not installed (or too old), or an unknown task name.
        DataError: MTEB's data for a task cannot be loaded (offline without a cache).
    """
    from hardcse.models.loading import describe_pooling

    start = time.perf_counter()
    mteb = require_mteb()
    names = list(TASKS) if tasks is None else list(dict.fromkeys(canonical_task(t) for t in tasks))
    if not names:
        raise ConfigError("no STS task given; name at least one, e.g. STS-B.")
    given = {canonical_task(k): v for k, v in (datasets or {}).items()}

    task_objects: dict[str, Any] = {}
    for name in names:
        task = mteb.get_task(MTEB_TASK_NAMES[name])
        if name in given:
            task.dataset = given[name]
            task.data_loaded = True
        else:
            _load(task, name)  # before any encoding: a missing task fails fast
        task_objects[name] = task

    result = mteb.evaluate(
        model,
        tasks=list(task_objects.values()),
        encode_kwargs={"batch_size": batch_size, "show_progress_bar": show_progress},
        cache=None,  # no writes to ~/.cache/mteb; the result is returned and printed
        overwrite_strategy="always",
        show_progress_bar=show_progress,
    )
    pairs = {name: _pairs(task) for name, task in task_objects.items()}  # mteb may unload what it loaded
    by_name = {tr.task_name: tr for tr in result.task_results}
    scores: dict[str, dict[str, Any]] = {}
    for name in task_objects:
        task_result = by_name.get(MTEB_TASK_NAMES[name])
        value = math.nan
        if task_result is not None:
            test = task_result.scores.get("test") or []
            if test:
                value = 100.0 * float(test[0].get("cosine_spearman", test[0].get("main_score", math.nan)))
        scores[name] = {"spearman": value, "pairs": pairs[name]}
    ordered = {t: scores[t] for t in TASKS if t in scores}
    return {
        "model": model_name or _name(model),
        "pooling": pooling or describe_pooling(model),
        "source": "mteb",
        "mteb_version": getattr(mteb, "__version__", None),
        "aggregation": "all",
        "split": "test",
        "tasks": ordered,
        "avg": average(ordered),
        "seconds": time.perf_counter() - start,
    }
