"""No import cycles in controlplane/ (issue 11): imports go one way, so every module can be read,
tested and loaded on its own.

The graph is read from the source with ``ast``: every ``import``/``from ... import`` of a
controlplane module counts, also inside functions (an import moved into a function to dodge a
cycle is still a cycle); only ``if TYPE_CHECKING:`` blocks are left out, since they never run.
A package's ``__init__`` being loaded before its submodules is Python's doing, not an edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "controlplane"

# Cycles that exist on main and are being removed elsewhere; each entry is one cycle's modules,
# sorted. Empty this list as they go: the test fails for a cycle that is listed but gone too.
KNOWN_CYCLES: list[tuple[str, ...]] = [
    # ADS server <-> delta protocol: being split by the helper on issue 11's xDS part.
    ("controlplane.xds.delta", "controlplane.xds.server"),
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The controlplane modules ``module`` imports."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def resolve(name: str) -> str | None:
        while name and name not in modules:  # "a.b.func" -> "a.b"
            name = name.rpartition(".")[0]
        return name or None

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # "from pkg import sub" imports the submodule pkg.sub when there is one.
            targets = [f"{source}.{alias.name}" for alias in node.names]
        else:
            targets = []
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                resolved = resolve(target)
                if resolved is not None and resolved != module:
                    found.add(resolved)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return found


def import_cycles() -> list[tuple[str, ...]]:
    """Each strongly connected component of more than one module (Tarjan), as sorted names."""
    modules = _modules()
    graph = {name: _imported(name, path, modules) for name, path in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[tuple[str, ...]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                connect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(tuple(sorted(component)))

    for name in sorted(graph):
        if name not in index:
            connect(name)
    return sorted(cycles)


def test_no_import_cycles_in_controlplane():
    cycles = import_cycles()
    new = [c for c in cycles if c not in KNOWN_CYCLES]
    assert not new, "import cycles (break them; imports go one way): " + "; ".join(" <-> ".join(c) for c in new)
    gone = [c for c in KNOWN_CYCLES if c not in cycles]
    assert not gone, f"no longer cycles, remove them from KNOWN_CYCLES: {gone}"


def test_the_checker_sees_a_cycle_hidden_in_a_function(tmp_path, monkeypatch):
    """The old echo <-> echoh2c cycle had one side inside a function; the checker must see it."""
    pkg = tmp_path / PACKAGE
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import g\n")
    (pkg / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import x\n"
        "def g():\n    from controlplane import a\n"
    )
    (pkg / "c.py").write_text("from . import b\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert import_cycles() == [("controlplane.a", "controlplane.b")]
