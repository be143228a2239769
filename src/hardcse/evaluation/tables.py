"""The papers' STS tables in Markdown (``STS12 ... STS-B SICK-R Avg``, two decimals), aligned for a terminal."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hardcse.data.sts import DISPLAY_NAMES, TASKS
from hardcse.numeric import is_nan


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if is_nan(value):
        return "nan"
    return f"{value:.2f}"


def markdown_table(header: list[str], rows: list[list[str]], label_column: bool) -> str:
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
        return markdown_table(header, [cells], label_column=False)
    return markdown_table(["Model", *header], [[label, *cells]], label_column=True)


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
    return markdown_table(["Model", *(DISPLAY_NAMES[t] for t in tasks), "Avg"], rows, label_column=True)
