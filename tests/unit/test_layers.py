"""The import layers of ARCHITECTURE.md ("Who may import whom") and no import cycles.

Every ``import`` in ``src/isthmus`` counts, also those under ``TYPE_CHECKING`` and inside
functions: a lazy import is still a dependency.  A module may import its own package
(top-level folder) and the layers below; packages on one layer never import each other.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import isthmus

ROOT = Path(isthmus.__file__).parent

# Bottom up.  Peers on one layer share interfaces from below, never each other's modules.
LAYERS: list[set[str]] = [
    {"model"},
    {"observe"},
    {"net"},
    {"connectors", "transport", "historian", "sim"},
    {"pipeline"},
    {"analytics", "security"},
    {"web"},  # the UI's static pages: imports nothing
    {"api"},
    {"app", "cli", "roles", "docgen", "__main__", "__init__"},
]
LAYER_OF = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")
                    anchor = anchor if is_pkg else anchor[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                # ``from pkg import sub`` depends on the submodule; ``from mod import name``
                # on the module.
                subs = [f"{base}.{a.name}" for a in node.names]
                targets = [t for t in subs if t in modules] or [base]
                if any(t not in modules for t in subs):
                    targets.append(base)
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and target != "isthmus":
                    deps.add(target)
        graph[name] = deps
    return graph


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_package_has_a_layer() -> None:
    packages = {package_of(m) for m in import_graph()}
    assert packages - set(LAYER_OF) == set(), "add new top-level packages to LAYERS"


def test_imports_respect_the_layers() -> None:
    bad: list[str] = []
    for module, deps in sorted(import_graph().items()):
        own = package_of(module)
        for dep in sorted(deps):
            other = package_of(dep)
            if other == own:
                continue
            top = LAYER_OF[own] == len(LAYERS) - 1  # the composition root may import all
            if LAYER_OF[other] > LAYER_OF[own] or (LAYER_OF[other] == LAYER_OF[own] and not top):
                bad.append(f"{module} -> {dep}")
    print(f"layer violations: {len(bad)}", *bad, sep="\n  ")
    assert bad == []


def test_no_import_cycles() -> None:
    graph = import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:  # Tarjan, iterative enough for this graph's depth
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    print(f"import cycles: {len(cycles)}", *cycles, sep="\n  ")
    assert cycles == []


def test_the_checker_sees_a_violation() -> None:
    """The layer map is not vacuous: model is below everything, cli above everything."""
    assert LAYER_OF["model"] < LAYER_OF["observe"] < LAYER_OF["net"] < LAYER_OF["connectors"]
    assert LAYER_OF["connectors"] == LAYER_OF["transport"] == LAYER_OF["historian"]
    graph = import_graph()
    assert any(package_of(d) == "model" for d in graph["isthmus.connectors.base"])
    assert defaultdict(set, graph)["isthmus.cli"], "the CLI imports its command modules"
