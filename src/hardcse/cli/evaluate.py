"""``hardcse evaluate``: score a model on the STS tasks the way the SimCSE-family papers do."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import typer
from rich.console import Console

from hardcse.cli import app
from hardcse.errors import ConfigError, DataError
from hardcse.io import atomic_write_json
from hardcse.numeric import is_nan
from hardcse.rundir import check_writable

_TASKS_HELP = (
    "Comma-separated tasks: STS12, STS13, STS14, STS15, STS16, STS-B (STSBenchmark), SICK-R "
    "(SICKRelatedness). Default: all seven (with --split test), STS-B and SICK-R otherwise."
)


class _WarningPrinter(logging.Handler):
    """Prints warnings as ``warning: <message>`` on the current ``sys.stderr``."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        print(f"warning: {record.getMessage()}", file=sys.stderr)


def _show_warnings() -> None:
    """Print hardcse's logged warnings (e.g. unexpected pair counts) unless logging is configured."""
    logger = logging.getLogger("hardcse")
    if not logger.handlers and not logging.getLogger().handlers:
        logger.addHandler(_WarningPrinter())


def check_output_file(path: Path | None) -> None:
    """Refuse an ``--output`` that cannot be written, before the (slow) evaluation."""
    if path is None:
        return
    if path.is_dir():
        raise DataError(f"--output {path} is a directory; give a file name such as {path / 'sts.json'}.")
    parent = next((p for p in [path.parent, *path.parent.parents] if p.exists()), None)
    if parent is None or not parent.is_dir():
        raise DataError(f"--output {path} cannot be created: '{parent}' is not a directory.")
    check_writable(path, parent, option="--output")


def write_json(result: dict, path: Path) -> None:
    """Write ``result`` to ``path`` atomically (NaN written as null, strict JSON)."""
    check_output_file(path)
    atomic_write_json(path, result, strict=True)


@app.command()
def evaluate(
    model: str = typer.Argument(
        ..., help="Model directory, Hugging Face name, or 'default' (the bundled all-MiniLM-L6-v2)."
    ),
    pooling: str | None = typer.Option(
        None,
        "--pooling",
        help="cls, cls_before_pooler (= cls, raw [CLS]), mean, avg (= mean), max, lasttoken or weightedmean. "
        "Default: the model's own pooling (sentence-transformers models), cls (plain Hugging Face models).",
    ),
    tasks: str | None = typer.Option(None, "--tasks", help=_TASKS_HELP),
    aggregation: str = typer.Option(
        "all", "--aggregation", help="STS12-16: all (papers' setting), mean or wmean (weighted by pairs)."
    ),
    split: str = typer.Option("test", "--split", help="test or dev (STS-B and SICK-R only)."),
    batch_size: int = typer.Option(128, "--batch-size", min=1, help="Sentences per forward pass."),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Data directory (default: $HARDCSE_DATA, else ~/.cache/hardcse/data)."
    ),
    output: Path | None = typer.Option(None, "--output", "-o", help="Also write the result as JSON here."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow custom model code from the hub."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, mps ... (default: automatic)."),
    fused_kernels: bool = typer.Option(
        True,
        "--fused-kernels/--no-fused-kernels",
        help="On the CPU in float32, run linear layers on oneDNN with bias and GELU fused (faster; equal to "
        "float32 rounding). --no-fused-kernels uses torch's stock kernels.",
    ),
    pairs: list[str] | None = typer.Option(
        None,
        "--pairs",
        help="Score your own pairs (repeatable): a TSV, CSV or JSONL file with sentence1, sentence2 and score, a "
        "saved `datasets` directory, or a domain such as STS-B:captions (its --split). Without --tasks only these "
        "are scored; each gets a bootstrap 95% interval.",
    ),
    pair_columns: str | None = typer.Option(
        None, "--pair-columns", help="Columns of the --pairs files: sentence 1, sentence 2, score (e.g. s1,s2,label)."
    ),
    use_mteb: bool = typer.Option(
        False,
        "--mteb",
        help="Score with MTEB's STS tasks instead of the SentEval data (needs the extra hardcse[mteb] and MTEB's "
        "data from the hub or its cache; MTEB's SICK-R is all 9,927 pairs, not the papers' test split).",
    ),
) -> None:
    """Evaluate MODEL on STS12-16, STS-B and SICK-R (cosine, Spearman x100, as SentEval/SimCSE)."""
    from hardcse.data.sts import load_tasks
    from hardcse.evaluation.scoring import check_aggregation, resolve_tasks
    from hardcse.evaluation.sts import evaluate_model
    from hardcse.models.defaults import display_name
    from hardcse.models.loading import check_pooling, load_sentence_model

    _show_warnings()
    # Everything a user can get wrong is checked before the (slow) model load.
    pooling = check_pooling(pooling)
    aggregation = check_aggregation(aggregation)
    names = None if tasks is None else [t for t in (p.strip() for p in tasks.split(",")) if t]
    if pairs and use_mteb:
        raise ConfigError("--pairs scores your own files; it cannot be combined with --mteb.")
    sets = _pair_sets(pairs, pair_columns, split, data_dir)
    names = resolve_tasks(names, split) if names or not sets else []  # --pairs alone: only the pairs
    if use_mteb:
        _evaluate_with_mteb(model, pooling, names, aggregation, split, batch_size, output, trust_remote_code, device)
        return
    data = load_tasks(names, data_dir, split) if names else {}
    check_output_file(output)

    begin = time.perf_counter()
    encoder = load_sentence_model(model, pooling=pooling, trust_remote_code=trust_remote_code, device=device)
    result = evaluate_model(
        encoder,
        data=data,
        aggregation=aggregation,
        split=split,
        batch_size=batch_size,
        show_progress=sys.stderr.isatty(),
        model_name=display_name(model),
        pooling=pooling,
        fused_kernels=fused_kernels,
    )
    if sets:
        from hardcse.evaluation.pairs import score_pair_sets

        result["pairs"], _ = score_pair_sets(encoder, sets, batch_size=batch_size, show_progress=sys.stderr.isatty())
        result["seconds"] = time.perf_counter() - begin
    nan = any(is_nan(t["spearman"]) for t in result["tasks"].values())
    _print_result(
        result,
        f"aggregation={result['aggregation']}  split={result['split']}",
        "note: nan means the model gave every pair the same similarity." if nan else None,
        output,
    )


def _pair_sets(specs: list[str] | None, columns: str | None, split: str, data_dir: Path | None) -> list:
    """The ``--pairs`` sets, read and checked before any model loads (domains: their ``split``)."""
    if not specs:
        return []
    from hardcse.data.pairs import load_pair_set, unique_names

    return unique_names([load_pair_set(spec, split, data_dir, columns) for spec in specs])


def _print_result(result: dict, settings: str, note: str | None, output: Path | None) -> None:
    """The header line, the papers' table, an optional note; write the JSON to ``output``."""
    from hardcse.evaluation.tables import format_table

    console = Console(highlight=False, soft_wrap=True)
    console.print(
        f"{result['model']}  pooling={result['pooling']}  {settings}  ({result['seconds']:.1f} s)", markup=False
    )
    if result["tasks"]:
        console.print(format_table(result), markup=False)
    if result.get("pairs"):
        from hardcse.evaluation.pairs import format_pair_table

        console.print(format_pair_table(result["pairs"]), markup=False)
    if note:
        console.print(note, markup=False)
    if output is not None:
        write_json(result, output)
        console.print(f"wrote {output}", markup=False)


def _evaluate_with_mteb(
    model: str,
    pooling: str | None,
    names: list[str],
    aggregation: str,
    split: str,
    batch_size: int,
    output: Path | None,
    trust_remote_code: bool,
    device: str | None,
) -> None:
    """``hardcse evaluate --mteb``: the same table from MTEB's copies of the tasks."""
    from hardcse.data.sts import canonical_split
    from hardcse.errors import ConfigError
    from hardcse.evaluation.mteb_bridge import SICKR_NOTE, evaluate_mteb, require_mteb
    from hardcse.models.defaults import display_name
    from hardcse.models.loading import load_sentence_model

    if canonical_split(split) != "test":
        raise ConfigError("--mteb scores MTEB's test sets only; drop --split or use --split test.")
    if aggregation != "all":
        raise ConfigError(
            "--aggregation does not apply to --mteb: MTEB pools each STS year's subsets into one Spearman (= all)."
        )
    check_output_file(output)
    require_mteb()  # before the (slow) model load
    encoder = load_sentence_model(model, pooling=pooling, trust_remote_code=trust_remote_code, device=device)
    result = evaluate_mteb(
        encoder,
        names,
        batch_size=batch_size,
        show_progress=sys.stderr.isatty(),
        model_name=display_name(model),
        pooling=pooling,
    )
    note = SICKR_NOTE if "SICKRelatedness" in result["tasks"] else None
    _print_result(result, f"source=mteb {result['mteb_version']}", note, output)
