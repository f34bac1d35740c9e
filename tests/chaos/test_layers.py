"""The layers of `chaos/`, read from the code's own imports: each imports only the layers below
it (cli > scenarios > report > engine > lab > wire), and no module of the lab imports itself
back through others. Type-only imports count: they tie modules together all the same."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("cli", "scenarios", "report", "engine", "lab", "wire")  # top first


def _modules() -> dict[str, set[str]]:
    """{module: the lab's modules it imports}, for every module under chaos/ and herdlab/."""
    found: dict[str, set[str]] = {}
    for package in ("chaos", "herdlab"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            imported: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    imported.add(node.module)
                    imported.update(f"{node.module}.{a.name}" for a in node.names)
                elif isinstance(node, ast.Import):
                    imported.update(a.name for a in node.names)
            found[name] = imported
    return {m: {i for i in imported if i in found and i != m} for m, imported in found.items()}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return (
        LAYERS.index(parts[1])
        if parts[0] == "chaos" and len(parts) > 1 and parts[1] in LAYERS
        else None
    )


def test_each_layer_imports_only_the_layers_below_it() -> None:
    upward = []
    for module, imported in _modules().items():
        here = _layer(module)
        for other in imported:
            there = _layer(other)
            if here is not None and there is not None and there < here:
                upward.append(f"{module} -> {other}")
    assert sorted(upward) == []


def test_no_import_circle() -> None:
    graph = _modules()
    # A package imports its own modules to load them (registries); that is no circle.
    edges = {m: {i for i in imported if not i.startswith(m + ".")} for m, imported in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in edges[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert circles == []


def test_chaos_has_at_most_eight_entries_at_its_top() -> None:
    entries = [p.name for p in (ROOT / "chaos").iterdir() if p.name != "__pycache__"]
    assert len(entries) <= 8, sorted(entries)
