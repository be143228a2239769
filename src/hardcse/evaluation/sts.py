"""SentEval-compatible STS evaluation: cosine similarity, Spearman x100, the papers' aggregations.

The protocol is that of the SentEval fork used by SimCSE, ClusterNS and HSimCSE
(``spec/METHODS.md`` section 6):

* each pair is scored by the **cosine similarity** of its two sentence embeddings (NaN
  embedding entries and NaN cosines become 0, as in SentEval; two identical sentences score
  exactly 1, so the 61 such pairs of STS12 tie rather than being ranked by rounding noise);
* a task's number is the **Spearman correlation x 100** with the gold scores;
* STS12-16 aggregate their sub-datasets with ``all`` (one Spearman over the concatenated
  sub-datasets: the papers' setting and the default), ``mean`` (unweighted mean of the
  per-sub-dataset values) or ``wmean`` (mean weighted by pair count);
* STS-B and SICK-R use their ``test`` split (``dev`` for model selection);
* ``avg`` is the mean of the per-task values **rounded to two decimals first**, like SimCSE's
  ``evaluation.py``.

Encoding is done once for all requested tasks: every distinct sentence is embedded exactly once
and the pairs index into that matrix. Each sentence is tokenised once, the sentences are
sorted by token count and run through the model batch by batch, so batches carry almost no
padding (models with prompts or other inputs go through ``model.encode``). SentEval applies **no
truncation**, so while encoding the model's ``max_seq_length`` is lifted to the transformer's
position limit and restored afterwards (hardcse models are trained with ``max_seq_length=32``
and keep it).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from sentence_transformers import SentenceTransformer

from hardcse.data.sts import (
    DISPLAY_NAMES,
    METRIC_NAMES,
    SPLIT_TASKS,
    TASKS,
    STSPairs,
    canonical_split,
    canonical_task,
    load_tasks,
)
from hardcse.errors import ConfigError
from hardcse.models.encoder import position_limit

try:  # sentence-transformers >= 5.4
    from sentence_transformers.base.evaluation.evaluator import BaseEvaluator
except ImportError:  # pragma: no cover - older layout
    from sentence_transformers.evaluation import SentenceEvaluator as BaseEvaluator  # type: ignore[no-redef]

logger = logging.getLogger(__name__)

#: Ways to combine the sub-datasets of STS12-16 into one number.
AGGREGATIONS: tuple[str, ...] = ("all", "mean", "wmean")

#: Default encoding batch size (SentEval's).
DEFAULT_BATCH_SIZE = 128

TaskData = Mapping[str, Mapping[str, STSPairs]]


# --------------------------------------------------------------------------------------------
# Scoring


def check_aggregation(aggregation: str) -> str:
    """Return ``aggregation`` lower-cased, or raise :class:`ConfigError` if it is unknown."""
    key = str(aggregation).strip().lower()
    if key not in AGGREGATIONS:
        raise ConfigError(f"unknown aggregation '{aggregation}'; choose one of {', '.join(AGGREGATIONS)}.")
    return key


def spearman100(gold: np.ndarray, system: np.ndarray) -> float:
    """Spearman's rank correlation x 100 (NaN when either side is constant)."""
    gold = np.asarray(gold, dtype=np.float64)
    system = np.asarray(system, dtype=np.float64)
    if len(gold) < 2 or np.all(gold == gold[0]) or np.all(system == system[0]):
        logger.warning("Spearman is undefined for %d pairs with constant scores; reporting NaN.", len(gold))
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(gold, system)[0]) * 100.0


def cosine_rows(emb1: np.ndarray, emb2: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity in float64; NaN entries and undefined cosines become 0 (SentEval)."""
    a = np.nan_to_num(np.asarray(emb1)).astype(np.float64)
    b = np.nan_to_num(np.asarray(emb2)).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.einsum("ij,ij->i", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return np.nan_to_num(cos, nan=0.0, posinf=0.0, neginf=0.0)


def aggregate(subsets: Mapping[str, tuple[np.ndarray, np.ndarray]], aggregation: str = "all") -> dict:
    """Score one task from its sub-datasets' ``(gold, system)`` arrays.

    Returns ``{"spearman": float, "pairs": int, "subsets": {name: float}}`` where ``spearman``
    is combined by ``aggregation``: ``all`` (Spearman of the concatenation), ``mean`` or
    ``wmean`` (weighted by pairs) of the per-subset values. For one subset all three agree.
    """
    aggregation = check_aggregation(aggregation)
    per_subset = {name: spearman100(gold, system) for name, (gold, system) in subsets.items()}
    sizes = np.array([len(gold) for gold, _ in subsets.values()], dtype=np.float64)
    values = np.array(list(per_subset.values()), dtype=np.float64)
    if aggregation == "all" and len(subsets) > 1:
        value = spearman100(
            np.concatenate([gold for gold, _ in subsets.values()]),
            np.concatenate([system for _, system in subsets.values()]),
        )
    elif aggregation == "wmean":
        value = float(np.sum(values * sizes) / np.sum(sizes))
    else:  # "mean", or "all" with a single subset
        value = float(np.mean(values))
    return {"spearman": value, "pairs": int(sizes.sum()), "subsets": per_subset}


@contextmanager
def untruncated(model: SentenceTransformer) -> Iterator[None]:
    """Within the block, ``model.max_seq_length`` is the position limit (no truncation, as SentEval);
    the previous value is restored afterwards."""
    previous = model.max_seq_length
    limit = position_limit(model)
    lifted = limit is not None and (previous is None or previous < limit)
    if lifted:
        model.max_seq_length = limit
    try:
        yield
    finally:
        if lifted:
            model.max_seq_length = previous


def token_lengths(model: SentenceTransformer, sentences: Sequence[str]) -> np.ndarray | None:
    """Token count of each sentence (special tokens included), or ``None`` without a text tokenizer."""
    tokenizer = getattr(model[0], "tokenizer", None)
    if tokenizer is None or not callable(tokenizer):
        return None
    try:
        ids = tokenizer(list(sentences), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    except Exception:  # not a text tokenizer we can call this way: fall back to encode's own sorting
        logger.debug("could not pre-tokenize for length sorting", exc_info=True)
        return None
    return np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))


def encode_unique(
    model: SentenceTransformer,
    sentences: Sequence[str],
    batch_size: int = DEFAULT_BATCH_SIZE,
    show_progress: bool = False,
    fused_kernels: bool = True,
) -> np.ndarray:
    """Embed ``sentences`` (already distinct), untruncated, in eval mode; one float32 row each, on the CPU.

    The sentences are sorted by **token** count and encoded one batch at a time, so a batch
    holds sentences of (nearly) equal length and carries almost no padding (``encode`` alone
    sorts by character count, which leaves about 30-50% padding on these sets). A plain text
    encoder takes the fast path (every sentence tokenised once, slices through ``forward``);
    others go batch by batch through ``model.encode``.
    Without a callable tokenizer a single ``encode`` call is made. With ``fused_kernels`` a
    float32 model on the CPU runs its linear layers on oneDNN with bias and GELU fused
    (:func:`hardcse.models.fused_linear.fused_cpu_inference`; 6% faster on the seven sets here, equal to float32
    rounding). The model's training mode, modules and ``max_seq_length`` are restored afterwards.
    """
    from tqdm.auto import tqdm

    from hardcse.models.fused_linear import fused_cpu_inference

    sentences = list(sentences)
    was_training = model.training
    options = {
        "batch_size": batch_size,
        "convert_to_tensor": True,
        "convert_to_numpy": False,
        "show_progress_bar": False,
    }
    try:
        with untruncated(model), torch.inference_mode(), fused_cpu_inference(model, fused_kernels):
            fast = _encode_pretokenized(model, sentences, batch_size, show_progress)
            if fast is not None:
                return fast
            lengths = token_lengths(model, sentences)
            if lengths is None:
                embeddings = model.encode(sentences, **{**options, "show_progress_bar": show_progress})
            else:
                order = np.argsort(-lengths, kind="stable")  # longest first: memory peaks show early
                parts = [
                    model.encode([sentences[i] for i in order[start : start + batch_size]], **options)
                    for start in tqdm(range(0, len(order), batch_size), desc="Batches", disable=not show_progress)
                ]
                ordered = torch.cat(parts) if parts else torch.empty(0)
                embeddings = torch.empty_like(ordered)
                embeddings[torch.from_numpy(order).to(ordered.device)] = ordered
    finally:
        model.train(was_training)
    return embeddings.detach().to("cpu", torch.float32).numpy()


#: Largest padded token matrix (sentences x max_seq_length, its worst case) that the fast path
#: tokenises in one call (20M int64 entries: 160 MB per tensor).
PRETOKENIZE_LIMIT = 20_000_000

#: Sentences per ``preprocess`` call of the fast path. The tokenizer's own work is fast; turning
#: its padded output into tensors costs per padded entry, so chunks of similar character length
#: (little padding each) took 1.4 s instead of 3.2 s for the 26,126 sentences of the seven sets.
PRETOKENIZE_CHUNK = 2048


def _pretokenize(model: SentenceTransformer, sentences: list[str]) -> dict[str, Any] | None:
    """``model.preprocess(sentences)``, computed over chunks of similar character length.

    The chunks' token tensors are copied into one right-padded matrix per key (the width of the
    longest sentence), filled with the tokenizer's padding (``input_ids``: the pad token,
    ``token_type_ids``: its pad type, ``attention_mask``: 0), so the result equals one
    ``preprocess`` call. ``None`` when that cannot be guaranteed: another tensor key, no pad
    token, a chunk whose padding holds other values, or non-tensor entries that differ by chunk.
    """
    tokenizer = model[0].tokenizer
    if len(sentences) <= PRETOKENIZE_CHUNK:
        return model.preprocess(sentences)
    pad = {
        "input_ids": tokenizer.pad_token_id,
        "attention_mask": 0,
        "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0),
    }
    if pad["input_ids"] is None:
        return None
    by_length = np.argsort([-len(s) for s in sentences], kind="stable")
    parts = []
    for start in range(0, len(sentences), PRETOKENIZE_CHUNK):
        rows = torch.from_numpy(by_length[start : start + PRETOKENIZE_CHUNK])
        parts.append((rows, model.preprocess([sentences[i] for i in rows.tolist()])))
    first = parts[0][1]
    keys = {k for k, v in first.items() if isinstance(v, torch.Tensor)}
    if not keys <= set(pad) or "attention_mask" not in keys:
        return None
    width = max(f["attention_mask"].shape[1] for _, f in parts)
    merged: dict[str, Any] = {k: v for k, v in first.items() if k not in keys}
    for key in keys:
        merged[key] = torch.full((len(sentences), width), pad[key], dtype=first[key].dtype)
    for rows, features in parts:
        if {k for k, v in features.items() if isinstance(v, torch.Tensor)} != keys:
            return None
        if any(features[k] != v for k, v in merged.items() if k not in keys):
            return None
        padding = features["attention_mask"] == 0
        for key in keys:
            values = features[key]
            if values.dim() != 2 or not bool((values[padding] == pad[key]).all()):
                return None
            merged[key][rows, : values.shape[1]] = values
    return merged


@torch.inference_mode()
def _encode_pretokenized(
    model: SentenceTransformer, sentences: list[str], batch_size: int, show_progress: bool
) -> np.ndarray | None:
    """Tokenise every sentence once (the model's own ``preprocess``, see :func:`_pretokenize`),
    then run the model on length-sorted slices of those tensors: no second tokenisation per
    batch, which ``encode`` would do. ``None`` when the model is not a plain right-padded text
    encoder (prompts, other inputs, left padding) or the matrix could be too large; the caller
    then uses ``encode``.

    The last (shortest) batch is also encoded with ``encode`` and must agree (to 1e-5), so a
    model whose ``encode`` does more than ``forward`` falls back too. Call inside ``untruncated``.
    """
    from tqdm.auto import tqdm

    tokenizer = getattr(model[0], "tokenizer", None)
    prompts = getattr(model, "prompts", None) or {}
    if not sentences or any(prompts.values()) or getattr(model, "default_prompt_name", None):
        return None
    if tokenizer is None or getattr(tokenizer, "padding_side", "right") != "right":
        return None
    # preprocess truncates at max_seq_length, so that bounds the padded width.
    width_bound = model.max_seq_length
    if not callable(tokenizer) or not width_bound or len(sentences) * width_bound > PRETOKENIZE_LIMIT:
        return None
    try:
        features = _pretokenize(model, sentences)
    except Exception:  # an unusual module stack: let encode handle it
        logger.debug("could not pre-tokenise for the fast path", exc_info=True)
        return None
    if features is None:
        return None
    mask = features.get("attention_mask")
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        return None
    tensors = {k: v for k, v in features.items() if isinstance(v, torch.Tensor)}
    # Per-row token tensors are sliced; plain strings (e.g. ``modality``) are passed on as they are.
    if any(v.shape[:2] != mask.shape for v in tensors.values()) or any(
        not isinstance(v, (torch.Tensor, str)) for v in features.values()
    ):
        return None
    model.eval()  # no dropout (the caller restores the training mode)
    counts = mask.sum(dim=1)
    order = torch.argsort(-counts, stable=True)  # longest first: memory peaks show early
    device = model.device
    starts = range(0, len(order), batch_size)

    def run(rows: torch.Tensor) -> torch.Tensor:
        width = int(counts[rows].max())
        batch = {k: v[rows, :width].to(device) if k in tensors else v for k, v in features.items()}
        return model.forward(batch)["sentence_embedding"].float()

    # Checked on the last (shortest) batch first, where a second encoding costs least.
    last = order[starts[-1] :]
    embedded = run(last)
    check = model.encode([sentences[i] for i in last.tolist()], batch_size=batch_size, convert_to_tensor=True)
    if check.shape != embedded.shape or not torch.allclose(check.float().to(device), embedded, atol=1e-5):
        logger.debug("fast path disagrees with encode; using encode")
        return None
    out = torch.empty(len(sentences), embedded.shape[1], dtype=torch.float32)
    out[last] = embedded.to("cpu")
    for start in tqdm(starts[:-1], desc="Batches", disable=not show_progress):
        rows = order[start : start + batch_size]
        out[rows] = run(rows).to("cpu")
    return out.numpy()


def score_tasks(
    model: SentenceTransformer,
    data: TaskData,
    aggregation: str = "all",
    batch_size: int = DEFAULT_BATCH_SIZE,
    show_progress: bool = False,
    return_predictions: bool = False,
    fused_kernels: bool = True,
) -> dict[str, dict]:
    """Score already loaded tasks: ``{task: {"spearman", "pairs", "subsets"}}`` (Spearman x 100).

    Every distinct sentence over all tasks is encoded exactly once; a pair of two identical
    sentences scores exactly 1. With ``return_predictions`` each task also gets
    ``"predictions": {subset: (gold, cosine)}`` (float64 arrays, one entry per pair).
    ``fused_kernels`` is passed to :func:`encode_unique`.
    """
    aggregation = check_aggregation(aggregation)
    index: dict[str, int] = {}
    positions: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    for task, subsets in data.items():
        for subset, pairs in subsets.items():
            positions[task, subset] = (
                np.array([index.setdefault(s, len(index)) for s in pairs.sentences1], dtype=np.int64),
                np.array([index.setdefault(s, len(index)) for s in pairs.sentences2], dtype=np.int64),
            )
    logger.info("encoding %d distinct sentences", len(index))
    embeddings = encode_unique(
        model, list(index), batch_size=batch_size, show_progress=show_progress, fused_kernels=fused_kernels
    )
    results = {}
    for task, subsets in data.items():
        scored = {}
        for subset, pairs in subsets.items():
            idx1, idx2 = positions[task, subset]
            cosine = cosine_rows(embeddings[idx1], embeddings[idx2])
            # Two identical sentences: exactly 1 (unless the vector is zero/NaN: 0, as SentEval), so
            # such pairs tie instead of being ordered by last-bit rounding (STS12 has 61 of them).
            cosine[(idx1 == idx2) & (cosine != 0)] = 1.0
            scored[subset] = (pairs.scores, cosine)
        results[task] = aggregate(scored, aggregation)
        if return_predictions:
            results[task]["predictions"] = scored
    return results


def resolve_tasks(tasks: Sequence[str] | None, split: str = "test") -> list[str]:
    """Canonical task names for ``tasks`` (default: all seven for ``test``, STS-B and SICK-R otherwise).

    Raises:
        ConfigError: unknown task or split, no task, or a test-only task with another split.
    """
    split = canonical_split(split)
    if tasks is None:
        return list(TASKS) if split == "test" else list(SPLIT_TASKS)
    names = list(dict.fromkeys(canonical_task(t) for t in tasks))
    if not names:
        raise ConfigError("no STS task given; name at least one, e.g. STS-B.")
    if split != "test":
        test_only = [t for t in names if t not in SPLIT_TASKS]
        if test_only:
            raise ConfigError(
                f"{', '.join(test_only)} only has a test set, so it cannot be scored on the {split} split; "
                "use --split test or evaluate only STS-B and SICK-R."
            )
    return names


def average(task_results: Mapping[str, Mapping[str, Any]]) -> float:
    """Mean of the per-task Spearman values, each rounded to two decimals first (SimCSE's ``Avg``)."""
    values = [round(r["spearman"], 2) for r in task_results.values()]
    return float(np.mean(values)) if values else math.nan


def evaluate_model(
    model: SentenceTransformer,
    tasks: Sequence[str] | None = None,
    data_dir: str | Path | None = None,
    aggregation: str = "all",
    split: str = "test",
    batch_size: int = DEFAULT_BATCH_SIZE,
    show_progress: bool = True,
    model_name: str | None = None,
    pooling: str | None = None,
    data: TaskData | None = None,
    return_predictions: bool = False,
    fused_kernels: bool = True,
) -> dict:
    """Evaluate ``model`` on STS tasks the way the SimCSE-family papers do.

    Args:
        model: any sentence-transformers model (see :func:`hardcse.models.loading.load_sentence_model`).
        tasks: task names or aliases; default all seven for ``split="test"``, STS-B and SICK-R
            otherwise (STS12-16 only have test data).
        data_dir: the data directory (``None``: ``$HARDCSE_DATA`` or ``~/.cache/hardcse/data``).
        aggregation: ``all`` (default, the papers'), ``mean`` or ``wmean`` for STS12-16.
        split: ``test``, ``dev`` or ``train``; applies to STS-B and SICK-R.
        batch_size: sentences per forward pass.
        show_progress: show the encoding progress bar.
        model_name: the name stored in the result (default: the transformer's name or path).
        pooling: the pooling name stored in the result (default: read from the model).
        data: tasks already loaded with :func:`hardcse.data.sts.load_tasks` with the same
            ``split`` (skips reading files).
        return_predictions: also return ``"predictions": {task: {subset: (gold, cosine)}}``, the
            per-pair scores (numpy arrays, not JSON-serialisable; see :func:`save_predictions`).
        fused_kernels: on a float32 CPU model, run the linear layers on oneDNN with bias and GELU
            fused (faster; equal to float32 rounding). ``False`` uses torch's stock kernels.

    Returns:
        ``{"model", "pooling", "aggregation", "split", "tasks": {task: {"spearman", "pairs",
        "subsets": {name: value}}}, "avg", "seconds"}``; every correlation is Spearman x 100 at
        full precision, ``avg`` is the mean of the two-decimal task values.

    Encoding is untruncated: ``model.max_seq_length`` is raised to the position limit while
    encoding (SentEval does not truncate) and restored afterwards.
    """
    from hardcse.models.loading import describe_pooling

    start = time.perf_counter()
    aggregation = check_aggregation(aggregation)
    split = canonical_split(split)
    if data is None:
        names = resolve_tasks(tasks, split)
        data = load_tasks(names, data_dir, split)
    else:
        names = resolve_tasks(list(data) if tasks is None else tasks, split)
        data = {t: data[t] for t in names}
    task_results = score_tasks(model, data, aggregation, batch_size, show_progress, return_predictions, fused_kernels)
    predictions = {t: r.pop("predictions") for t, r in task_results.items() if "predictions" in r}
    ordered = {t: task_results[t] for t in TASKS if t in task_results}
    result = {
        "model": model_name or _model_name(model),
        "pooling": pooling or describe_pooling(model),
        "aggregation": aggregation,
        "split": split,
        "tasks": ordered,
        "avg": average(ordered),
        "seconds": time.perf_counter() - start,
    }
    if return_predictions:
        result["predictions"] = {t: predictions[t] for t in ordered}
    return result


def save_predictions(path: str | Path, predictions: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]]) -> None:
    """Write ``{task: {subset: (gold, cosine)}}`` atomically as an ``.npz`` (keys ``task/subset/gold|cosine``)."""
    import io

    from hardcse.io import atomic_write_bytes

    arrays = {}
    for task, subsets in predictions.items():
        for subset, (gold, cosine) in subsets.items():
            arrays[f"{task}/{subset}/gold"] = np.asarray(gold, dtype=np.float64)
            arrays[f"{task}/{subset}/cosine"] = np.asarray(cosine, dtype=np.float64)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def load_predictions(path: str | Path) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Read what :func:`save_predictions` wrote, in the order it was written."""
    predictions: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    with np.load(path, allow_pickle=False) as npz:
        for key in npz.files:
            task, subset, kind = key.rsplit("/", 2)
            if kind == "gold":
                predictions.setdefault(task, {})[subset] = (npz[key], npz[f"{task}/{subset}/cosine"])
    return predictions


def _model_name(model: SentenceTransformer) -> str:
    config = getattr(getattr(model[0], "auto_model", None), "config", None)
    return str(getattr(config, "_name_or_path", "") or type(model).__name__)


# --------------------------------------------------------------------------------------------
# Tables


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:.2f}"


def _markdown(header: list[str], rows: list[list[str]], label_column: bool) -> str:
    """A Markdown table whose columns are also aligned for a terminal.

    Numbers are right-aligned; with ``label_column`` the first column is a left-aligned label.
    """
    widths = [max(3, *(len(r[i]) for r in [header, *rows])) for i in range(len(header))]

    def left(i: int) -> bool:
        return label_column and i == 0

    def line(cells: list[str]) -> str:
        padded = [c.ljust(widths[i]) if left(i) else c.rjust(widths[i]) for i, c in enumerate(cells)]
        return "| " + " | ".join(padded) + " |"

    dashes = [":" + "-" * (w + 1) if left(i) else "-" * (w + 1) + ":" for i, w in enumerate(widths)]
    rule = "|" + "|".join(dashes) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def _task_order(*results: Mapping[str, Any]) -> list[str]:
    present = {t for r in results for t in r.get("tasks", {})}
    return [t for t in TASKS if t in present]


def format_table(result: Mapping[str, Any], label: str | None = None) -> str:
    """The papers' table (``STS12 ... STS-B SICK-R Avg``, two decimals) for the tasks present.

    Valid Markdown, aligned for a terminal. With ``label`` a first column holds it.
    """
    tasks = _task_order(result)
    header = [DISPLAY_NAMES[t] for t in tasks] + ["Avg"]
    cells = [_fmt(result["tasks"][t]["spearman"]) for t in tasks] + [_fmt(result.get("avg"))]
    if label is None:
        return _markdown(header, [cells], label_column=False)
    return _markdown(["Model", *header], [[label, *cells]], label_column=True)


def format_comparison(
    before: Mapping[str, Any], after: Mapping[str, Any], labels: tuple[str, str] = ("start", "trained")
) -> str:
    """Two results side by side plus a signed ``delta`` row (``after - before`` of the two-decimal values)."""
    tasks = _task_order(before, after)

    def values(result: Mapping[str, Any]) -> list[float | None]:
        per_task = [round(result["tasks"][t]["spearman"], 2) if t in result.get("tasks", {}) else None for t in tasks]
        avg = result.get("avg")
        return [*per_task, None if avg is None else round(avg, 2)]

    b, a = values(before), values(after)
    delta = [None if x is None or y is None else f"{y - x:+.2f}" for x, y in zip(b, a, strict=True)]
    rows = [
        [labels[0], *(_fmt(v) for v in b)],
        [labels[1], *(_fmt(v) for v in a)],
        ["delta", *(d if d is not None else "-" for d in delta)],
    ]
    return _markdown(["Model", *(DISPLAY_NAMES[t] for t in tasks), "Avg"], rows, label_column=True)


# --------------------------------------------------------------------------------------------
# Trainer evaluator


class STSEvaluator(BaseEvaluator):
    """STS evaluation during training (sentence-transformers evaluator), scored like :func:`evaluate_model`.

    Default: STS-B dev, reported as ``{"stsb_spearman": value}`` (Spearman x 100), which the
    trainer logs as ``eval_stsb_spearman``; ``primary_metric`` is set so
    ``metric_for_best_model="eval_stsb_spearman"`` selects checkpoints (greater is better).
    With several tasks each gets ``{name}_{task}_spearman`` and ``{name}_spearman`` is their
    mean (the primary metric). The pairs are read once, when the evaluator is built.
    """

    def __init__(
        self,
        tasks: Sequence[str] = ("STSBenchmark",),
        split: str = "dev",
        data_dir: str | Path | None = None,
        name: str | None = None,
        aggregation: str = "all",
        batch_size: int = DEFAULT_BATCH_SIZE,
        show_progress: bool = False,
        fused_kernels: bool = True,
    ) -> None:
        super().__init__()
        self.fused_kernels = fused_kernels
        self.split = canonical_split(split)
        self.tasks = resolve_tasks(list(tasks), self.split)
        self.aggregation = check_aggregation(aggregation)
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.data = load_tasks(self.tasks, data_dir, self.split)
        if name is None:
            name = METRIC_NAMES[self.tasks[0]] if len(self.tasks) == 1 else "sts"
        self.name = name
        self.primary_metric = f"{name}_spearman" if name else "spearman"
        self.greater_is_better = True

    def __call__(
        self, model: SentenceTransformer, output_path: str | None = None, epoch: int = -1, steps: int = -1
    ) -> dict[str, float]:
        """Score ``model``; returns the metrics dict (Spearman x 100)."""
        results = score_tasks(
            model, self.data, self.aggregation, self.batch_size, self.show_progress, fused_kernels=self.fused_kernels
        )
        prefix = f"{self.name}_" if self.name else ""
        metrics: dict[str, float] = {}
        if len(self.tasks) > 1:
            for task in self.tasks:
                metrics[f"{prefix}{METRIC_NAMES[task]}_spearman"] = results[task]["spearman"]
            metrics[self.primary_metric] = float(np.mean([results[t]["spearman"] for t in self.tasks]))
        else:
            metrics[self.primary_metric] = results[self.tasks[0]]["spearman"]
        logger.info(
            "STS evaluation (%s, %s) at epoch %s step %s: %s",
            ", ".join(DISPLAY_NAMES[t] for t in self.tasks),
            self.split,
            epoch,
            steps,
            ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()),
        )
        try:
            self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        except Exception:  # a model without model-card data must not break evaluation
            logger.debug("could not store STS metrics in the model card data", exc_info=True)
        return metrics

    @property
    def description(self) -> str:
        return "Semantic Similarity (STS)"

    def get_config_dict(self) -> dict[str, Any]:
        return {"tasks": self.tasks, "split": self.split, "aggregation": self.aggregation}
