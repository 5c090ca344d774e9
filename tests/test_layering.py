"""The modules of ``halffull`` import each other without cycles.

The graph is read from the source with ``ast``, not by importing: every ``import halffull.x``
and ``from .x import y`` anywhere in a file counts (module level, inside functions, under
``if TYPE_CHECKING``), since a cycle through a late or type-only import is still two modules
that each need the other. ``from P import name`` is an edge to the module ``P.name`` when
there is one, else to ``P``. Importing ``P.x`` runs ``P/__init__.py`` first, but that edge
from a module to its own parent package is not counted: every package that re-exports its
modules would otherwise be a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "halffull"
ROOT = PACKAGE.name


def module_names() -> dict[str, Path]:
    """Dotted name -> file, for every module (``.py``, and ``.pyi`` stubs of extensions)."""
    modules: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py*")):
        if path.suffix not in (".py", ".pyi"):
            continue
        parts = [ROOT, *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules.setdefault(".".join(parts), path)
    return modules


def import_graph() -> dict[str, set[str]]:
    modules = module_names()

    def known(name: str) -> str | None:  # the longest prefix of `name` that is a module
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.stem == "__init__"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str | None] = []
            if isinstance(node, ast.Import):
                targets = [known(alias.name) for alias in node.names if alias.name.split(".")[0] == ROOT]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = name.split(".") if is_package else name.split(".")[:-1]
                    base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                elif node.module and node.module.split(".")[0] == ROOT:
                    base = node.module
                else:
                    continue
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else known(base) for alias in node.names
                ]
            graph[name].update(t for t in targets if t is not None and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_the_graph_sees_imports_of_every_kind():
    graph = import_graph()
    assert "halffull.traces" in graph["halffull.sim"]  # from . import traces as _traces
    assert "halffull._core" in graph["halffull.sim"]  # an extension module, by its stub
    assert "halffull.errors" in graph["halffull.traces.formats"]  # from ..errors import ...
    assert "halffull.engine.serve" in graph["halffull.engine"]  # under if TYPE_CHECKING
    assert "halffull" in graph["halffull.engine.engine"]  # from .. import Scheduler, in a function
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles until none is left: after each, the imports among its modules are set aside,
    so each group of modules that import each other is reported once."""
    found: list[list[str]] = []
    remaining = {node: set(edges) for node, edges in graph.items()}
    while (cycle := find_cycle(remaining)) is not None:
        found.append(cycle)
        members = set(cycle)  # report the group once, then look for others
        for node in members:
            remaining[node] -= members
    return found


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in found)
