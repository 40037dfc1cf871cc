"""The folders are the architecture: imports only go down the layers, and nothing imports itself
back through a cycle (read from the source with ``ast``, so lazy imports count too).

Layers, bottom to top: ``paths`` and ``utils`` (no domain imports) -> ``data``, ``weights`` ->
``models`` -> ``inference`` -> ``reporting`` -> ``benchmarks`` (they measure the inference paths
too) -> ``cli``. Rooms on one layer do not import each other.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import covidxr

PACKAGE = Path(covidxr.__file__).parent
LAYERS = {
    "covidxr": 0,  # the package's own __init__
    "paths": 0,
    "run_folder": 0,
    "utils": 0,
    "data": 1,
    "weights": 1,
    "models": 2,
    "inference": 3,
    "reporting": 4,  # a report may score a model in any of its forms
    "pretraining": 4,  # makes weights: lists inputs as inference does, trains a trunk
    "benchmarks": 5,
    "cli": 6,
}
#: Inside ``data``: reading files, then forming splits (and making phantoms), then loading.
DATA_LAYERS = {"formats": 0, "splitting": 1, "phantoms": 1, "loading": 2}
Graph = dict[str, set[str]]


def module_name(path: Path) -> str:
    parts = ["covidxr", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> Graph:
    """Module -> the covidxr modules it imports anywhere in its source."""
    modules = {module_name(p): p for p in package.rglob("*.py")}
    graph: Graph = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer_violations(graph: Graph) -> list[str]:
    """Imports of a higher layer, or of another room on the same layer (above layer 0)."""
    found = []
    for source, targets in graph.items():
        for target in targets:
            a, b = room(source), room(target)
            if a == b:
                continue
            if LAYERS[b] > LAYERS[a] or (LAYERS[b] == LAYERS[a] and LAYERS[a] > 0):
                found.append(f"{source} ({a}, layer {LAYERS[a]}) imports {target} ({b})")
    return sorted(found)


def cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected groups of two or more modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def data_violations(graph: Graph) -> list[str]:
    """Inside ``data``: imports of a higher sub-package, or of another one on the same layer."""
    found = []
    for source, targets in graph.items():
        for target in targets:
            a, b = source.split("."), target.split(".")
            if a[1:2] != ["data"] or b[1:2] != ["data"] or len(a) < 4 or len(b) < 4:
                continue
            if a[2] != b[2] and DATA_LAYERS[b[2]] >= DATA_LAYERS[a[2]]:
                found.append(f"{source} ({a[2]}) imports {target} ({b[2]})")
    return sorted(found)


def rooms_of(modules: Iterable[str]) -> set[str]:
    return {room(m) for m in modules}


def test_every_room_has_a_layer() -> None:
    assert rooms_of(import_graph()) <= set(LAYERS)


def test_imports_only_go_down_the_layers() -> None:
    assert layer_violations(import_graph()) == []


def test_data_sub_packages_import_downwards() -> None:
    graph = import_graph()
    subs = {m.split(".")[2] for m in graph if m.startswith("covidxr.data.") and m.count(".") >= 3}
    assert subs == set(DATA_LAYERS)
    assert data_violations(graph) == []
    assert data_violations({"covidxr.data.formats.x": {"covidxr.data.loading.y"}}) != []


def test_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_utils_imports_nothing_of_the_domain() -> None:
    graph = import_graph()
    imported = {t for m, ts in graph.items() if room(m) == "utils" for t in ts}
    assert rooms_of(imported) <= {"utils", "paths", "run_folder"}


def test_the_checks_catch_what_they_guard() -> None:
    """A graph with an upward import, a same-layer import and a cycle is flagged."""
    graph = {
        "covidxr.utils.io": {"covidxr.data.splitting.index"},
        "covidxr.data.splitting.index": {
            "covidxr.weights.registry",
            "covidxr.data.splitting.audit",
        },
        "covidxr.data.splitting.audit": {"covidxr.data.splitting.index"},
        "covidxr.weights.registry": set(),
    }
    assert len(layer_violations(graph)) == 2
    assert cycles(graph) == [["covidxr.data.splitting.audit", "covidxr.data.splitting.index"]]
