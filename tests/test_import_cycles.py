"""No import cycles between the portal's apps (portal/<app>/) and the workers package.

A cycle (nodes imports workers.tasks, whose tasks import nodes) ties two areas so that neither
can be loaded, tested or changed alone. Every import counts, including ones inside functions:
moving an import into a function hides a cycle from Python, not from the design.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _packages() -> list[str]:
    apps = [f"portal.{d.name}" for d in sorted((ROOT / "portal").iterdir()) if (d / "__init__.py").exists()]
    return [*apps, "workers"]


def _owner(module: str, packages: list[str]) -> str | None:
    return next((p for p in packages if module == p or module.startswith(p + ".")), None)


def _imported(path: Path, module: str) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parent = module.split(".")[: -node.level]
                base = ".".join([*parent, base] if base else parent)
            names += [base] + [f"{base}.{alias.name}" for alias in node.names]
    return names


def import_graph() -> dict[str, dict[str, set[str]]]:
    """package -> imported package -> the files that import it."""
    packages = _packages()
    graph: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for package in packages:
        for path in (ROOT / package.replace(".", "/")).rglob("*.py"):
            rel = path.relative_to(ROOT)
            module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
            for name in _imported(path, module):
                target = _owner(name, packages)
                if target and target != package:
                    graph[package][target].add(str(rel))
    return graph


def cycles(graph: dict[str, dict[str, set[str]]]) -> list[list[str]]:
    """Each cycle once, as the path of packages around it (a DFS for back edges)."""
    found, state, path = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, {})):
            if state.get(target) == "open":
                found.append([*path[path.index(target):], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_checker_sees_a_cycle():
    graph = {"a": {"b": {"a/x.py"}}, "b": {"a": {"b/y.py"}}}
    assert cycles(graph) == [["a", "b", "a"]]


def test_there_are_no_import_cycles_between_apps_and_workers():
    graph = import_graph()
    assert "portal.nodes" in graph and "workers" in graph  # the walk found the code
    described = [" -> ".join(cycle) + "  (" + "; ".join(
        f"{a}->{b}: {', '.join(sorted(graph[a][b]))}" for a, b in pairwise(cycle)) + ")"
        for cycle in cycles(graph)]
    assert described == []
