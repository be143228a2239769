"""The layers of docs/architecture.md, checked on the source: imports go downward only, and there are no cycles.

Every module under ``src/hardcse`` is parsed with :mod:`ast` (nothing is imported); every import of a
hardcse module counts, at module level or inside a function (a function-level import is still a
dependency, only a later one). Modules belong to layers by their package (``hardcse.training.run``
is ``training``; ``hardcse/__init__.py`` is ``root``):

    cli > api > comparison > training > objectives > index, cluster > evaluation > data > models > bottom

(``bottom``: ``errors``, ``io``, ``numeric``, ``process_group``, ``rundir``, ``safety``). A module may import its own
package and the layers below its own, never a layer above nor one of the same rank.
``python benchmarks/check_layers.py`` prints the same check with every offending import.
"""

from __future__ import annotations

import ast
import collections
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "hardcse"

BOTTOM = ("errors", "io", "numeric", "process_group", "rundir", "safety")
RANK = {
    "bottom": 0,
    "models": 1,
    "data": 2,
    "evaluation": 3,
    "index": 4,
    "cluster": 4,
    "objectives": 5,
    "training": 6,
    "comparison": 7,
    "api": 8,
    "cli": 9,
    "__main__": 10,
    "root": 10,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "root"
    return "bottom" if parts[1] in BOTTOM else parts[1]


def hardcse_imports(path: Path, modules: set[str]) -> list[tuple[str, int]]:
    """``(imported hardcse module, line)`` for every import in ``path`` (``from a import b`` counts
    ``a.b`` when that is a module, else ``a``)."""
    name = module_name(path) if path.is_relative_to(SRC.parent) else path.stem
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            if target != "hardcse" and not target.startswith("hardcse."):
                continue
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            found.append((target, node.lineno))
    return found


def import_graph() -> dict[str, list[tuple[str, int]]]:
    paths = {module_name(p): p for p in SRC.rglob("*.py")}
    return {name: hardcse_imports(path, set(paths)) for name, path in paths.items()}


def violations(graph: dict[str, list[tuple[str, int]]]) -> list[str]:
    """One line per import that goes up or sideways between layers."""
    bad = []
    for module, imports in sorted(graph.items()):
        here = layer(module)
        for target, line in imports:
            there = layer(target)
            if there != here and RANK[there] >= RANK[here]:
                bad.append(f"{module}:{line} imports {target} ({here} may not import {there})")
    return bad


def layer_cycles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """Strongly connected groups of more than one layer in the layer graph (Tarjan)."""
    edges: dict[str, set[str]] = collections.defaultdict(set)
    for module, imports in graph.items():
        for target, _ in imports:
            if layer(target) != layer(module):
                edges[layer(module)].add(layer(target))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in list(edges):
        if node not in index:
            visit(node)
    return groups


def module_level_imports(path: Path, modules: set[str]) -> list[str]:
    """The hardcse modules ``path`` imports when it is imported: statements at module level (also
    inside a module-level ``if``/``try``), not inside functions or classes, nor under
    ``if TYPE_CHECKING:``."""
    name = module_name(path)
    found = []

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.If):
                test = ast.unparse(node.test)
                if "TYPE_CHECKING" not in test:
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                found.extend(target for target, _ in _resolve(node, name, path, modules))

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return found


def _resolve(node: ast.Import | ast.ImportFrom, name: str, path: Path, modules: set[str]) -> list[tuple[str, int]]:
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        if node.level:
            package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
            base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
    out = []
    for target in targets:
        if target != "hardcse" and not target.startswith("hardcse."):
            continue
        while target not in modules and "." in target:
            target = target.rsplit(".", 1)[0]
        out.append((target, node.lineno))
    return out


def module_cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (or a module importing itself) in a
    module-level import graph, inside a package or across packages (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(set(graph.get(root, [])))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(set(graph.get(child, []))))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    group.append(top)
                    if top == node:
                        break
                if len(group) > 1 or node in graph.get(node, []):
                    groups.append(sorted(group))
    return groups


def module_import_graph() -> dict[str, list[str]]:
    paths = {module_name(p): p for p in SRC.rglob("*.py")}
    graph = {name: module_level_imports(path, set(paths)) for name, path in paths.items()}
    # A package's __init__ is imported before any of its modules: importing it is not a cycle edge
    # from a module of that package to its own package.
    return {m: [t for t in ts if not (m.startswith(t + ".") and t != m)] for m, ts in graph.items()}


def test_every_module_has_a_layer():
    graph = import_graph()
    assert {layer(m) for m in graph} <= set(RANK), {layer(m) for m in graph} - set(RANK)
    assert len(graph) > 40  # the walk found the package


def test_imports_go_downward_only():
    assert violations(import_graph()) == []


def test_no_import_cycle_between_layers():
    assert layer_cycles(import_graph()) == []


def test_no_module_level_import_cycle_anywhere():
    # Also inside one package (two modules of evaluation importing each other at module level).
    assert module_cycles(module_import_graph()) == []


def test_the_module_cycle_check_catches_a_cycle_inside_a_package(tmp_path):
    graph = {
        "hardcse.evaluation.a": ["hardcse.evaluation.b"],
        "hardcse.evaluation.b": ["hardcse.evaluation.c"],
        "hardcse.evaluation.c": ["hardcse.evaluation.a", "hardcse.numeric"],
        "hardcse.numeric": [],
        "hardcse.training.x": ["hardcse.evaluation.a"],
    }
    assert module_cycles(graph) == [["hardcse.evaluation.a", "hardcse.evaluation.b", "hardcse.evaluation.c"]]
    assert layer_cycles({m: [(t, 1) for t in ts] for m, ts in graph.items()}) == []  # the layer check misses it
    source = SRC / "objectives" / "heads.py"  # its base import is under TYPE_CHECKING: not a cycle edge
    assert "hardcse.objectives.base" not in module_level_imports(source, {"hardcse.objectives.base"})


def test_the_check_catches_an_upward_import(tmp_path):
    # The check itself: a lower layer importing training, api or the root is reported, also
    # inside a function.
    graph = {
        "hardcse.objectives.x": [("hardcse.training.run", 3)],
        "hardcse.data.y": [("hardcse", 1)],
        "hardcse.index.z": [("hardcse.api", 9)],
        "hardcse.training.run": [("hardcse.objectives.x", 1)],
    }
    found = violations(graph)
    assert len(found) == 3 and "objectives may not import training" in found[2]
    assert layer_cycles(graph) == [["objectives", "training"]]
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from hardcse.training.config import TrainConfig\n", encoding="utf-8")
    assert hardcse_imports(source, {"hardcse.training.config"}) == [("hardcse.training.config", 2)]
