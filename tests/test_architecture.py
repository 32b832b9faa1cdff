"""The house's import rules, read from the source (docs/architecture.md): no cycles, arrows one way.

Every ``import`` statement counts, the ones inside functions too (gbuf imports torch, bpy and
many of its own modules lazily; a lazy cycle is still a cycle a reader has to untangle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "gbuf"

# package -> the gbuf packages it may import (besides itself and the leaf modules below).
ALLOWED = {
    "gbuf.scenes": set(),
    "gbuf.datasets": set(),
    "gbuf.render": {"gbuf.datasets"},
    "gbuf.train": {"gbuf.datasets"},
    "gbuf.experiments": {"gbuf.datasets", "gbuf.render", "gbuf.train"},
    "gbuf.cli": {"gbuf.datasets", "gbuf.render", "gbuf.train", "gbuf.scenes", "gbuf.experiments"},
}
# Top-level leaf modules every room may use; they import no other room.
LEAVES = {"gbuf.errors", "gbuf.runtime", "gbuf.config_files", "gbuf.fileio", "gbuf.progress"}
# Third-party packages only some rooms may import.
ONLY_IN = {"bpy": {"gbuf.render", "gbuf.scenes"}, "rich": {"gbuf.cli"}, "click": {"gbuf.cli"}}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(module: str, name: str | None) -> str:
    """The gbuf module an import names: ``from a.b import c`` is a.b.c when that is a module."""
    if name and f"{module}.{name}" in MODULES:
        return f"{module}.{name}"
    return module


def _imports(name: str) -> set[str]:
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                found.add(_resolve(base, alias.name))
    return found


GRAPH = {name: {m for m in _imports(name) if m in MODULES and m != name} for name in MODULES}
THIRD_PARTY = {name: {m.split(".")[0] for m in _imports(name) if not m.startswith("gbuf")} for name in MODULES}


def _room(module: str) -> str | None:
    for room in ALLOWED:
        if module == room or module.startswith(room + "."):
            return room
    return None


def test_the_walk_sees_the_house():
    # Guards the test itself: it must find the modules and their known imports.
    assert {"gbuf.datasets.store", "gbuf.train.trainer", "gbuf.render.pipeline", "gbuf.experiments.run",
            "gbuf.cli"} <= MODULES.keys()
    assert "gbuf.train.trainer" in GRAPH["gbuf.experiments.run"]
    assert "gbuf.errors" in GRAPH["gbuf.datasets.store"]
    assert "gbuf.datasets.format" in GRAPH["gbuf.datasets.store"]


def test_no_import_cycle_anywhere_in_gbuf():
    # Tarjan's strongly connected components: any component of more than one module is a cycle.
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
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

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_only_downward(module):
    room = _room(module)
    for target in GRAPH[module]:
        target_room = _room(target)
        if target in LEAVES:
            assert not any(_room(m) for m in GRAPH[target]), f"{target} is a leaf and imports a room"
            continue
        if room is None:          # gbuf/__init__, __main__ and the leaves
            continue
        if target_room is None:
            # The top-level modules besides the leaves (gbuf/__init__, gbuf/__main__) are entry points.
            assert target in LEAVES or target == "gbuf", f"{module} imports the entry point {target}"
            continue
        assert target_room == room or target_room in ALLOWED[room], (
            f"{module} ({room}) imports {target} ({target_room}): arrows run "
            f"{room} -> {sorted(ALLOWED[room]) or 'nothing'}")
    for package, rooms in ONLY_IN.items():
        if package in THIRD_PARTY[module]:
            assert room in rooms, f"{module} imports {package}, which only {sorted(rooms)} may"
