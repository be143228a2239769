"""Print hardcse's import layers (docs/architecture.md) and every import that breaks them; exit 1 if any does.

    .venv/bin/python benchmarks/check_layers.py

The check is the one of ``tests/test_layers.py`` (source parsed with ``ast``, nothing imported):
imports go downward only, module-level and function-level ones alike, and the layers have no cycle.
"""

from __future__ import annotations

import collections
import importlib.util
import sys
from pathlib import Path

TEST = Path(__file__).resolve().parents[1] / "tests" / "test_layers.py"


def main() -> int:
    spec = importlib.util.spec_from_file_location("test_layers", TEST)
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    graph = check.import_graph()
    uses: dict[str, set[str]] = collections.defaultdict(set)
    for module, imports in graph.items():
        for target, _ in imports:
            if check.layer(target) != check.layer(module):
                uses[check.layer(module)].add(check.layer(target))
    print(f"{len(graph)} modules")
    for name in sorted(check.RANK, key=lambda n: -check.RANK[n]):
        if name in uses or any(check.layer(m) == name for m in graph):
            below = ", ".join(sorted(uses.get(name, ()), key=lambda n: -check.RANK[n])) or "-"
            print(f"  {name:<11} imports {below}")
    bad, cycles = check.violations(graph), check.layer_cycles(graph)
    for line in bad:
        print("UPWARD", line)
    for group in cycles:
        print("CYCLE ", " <-> ".join(group))
    print("OK: imports go downward only, no cycle" if not (bad or cycles) else f"{len(bad) + len(cycles)} problem(s)")
    return 1 if bad or cycles else 0


if __name__ == "__main__":
    sys.exit(main())
