"""The import graph of netsim has no circles (issue 17): every module can be read, and tested,
after the modules it imports, never together with them.

Imports under ``if TYPE_CHECKING:`` are annotations only and do not count.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "netsim"


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _imports(tree: ast.AST) -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            for n in node.orelse:
                visit(n)
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("netsim"):
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names if a.name.startswith("netsim"))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        for mod, names in _imports(ast.parse(path.read_text())):
            targets = [f"{mod}.{n}" for n in names if f"{mod}.{n}" in mods] or ([mod] if mod in mods else [])
            edges[name].update(t for t in targets if t != name)
    return edges


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the components with more than one module (the circles)."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles() -> None:
    assert strongly_connected(import_graph()) == []


def test_the_checker_finds_a_circle() -> None:
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


#: the layers, top first (docs/architecture.md): a module may import its own layer and the ones below
#: traces/ sits with run/: it reads traces and compiles them to a StepPlan that run_plan replays
LAYERS = [
    {"cli"},
    {"studies", "sweep"},
    {"report"},
    {"run", "run_accounting", "accuracy", "traces"},
    {"replay"},
    {"workload", "moe", "collectives"},
    {"network"},
    {"topology"},
    {"config", "spec"},
]


def _layer(module: str) -> int | None:
    part = module.split(".")[1] if "." in module else module
    return next((i for i, layer in enumerate(LAYERS) if part in layer), None)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Imports (lazy ones too) from a layer to one above it."""
    out = []
    for src, targets in sorted(graph.items()):
        a = _layer(src)
        for dst in sorted(targets):
            b = _layer(dst)
            if a is not None and b is not None and b < a:
                out.append(f"{src} -> {dst}")
    return out


def test_no_import_points_up_the_layers() -> None:
    """run/ never imports report/ (a report writer is passed in), report/ never cli/ or studies/."""
    assert upward_imports(import_graph()) == []


def test_the_checker_finds_an_upward_import() -> None:
    assert upward_imports({"netsim.run": {"netsim.report.run_report"}}) == ["netsim.run -> netsim.report.run_report"]
