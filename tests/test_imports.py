"""The package's import graph, read with ``ast`` (issue 11): no cycles, no private names taken
across modules, and pure translators (docs/architecture.md). Imports go one way, so every module
can be read, tested and loaded on its own.

Every import counts, also one inside a function: a late import hides a cycle from Python, not
from the design. Imports under ``if TYPE_CHECKING:`` are annotations, not imports, and do not count
(quarantine.py names the Controller that drives it).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "controlplane"
GENERATED = ("controlplane.admin.v1", "controlplane.echo.grpcecho", "controlplane.echo.v1")


def module_name(path: Path, root: Path = REPO) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = REPO) -> dict[str, Path]:
    return {
        module_name(p, root): p
        for p in (root / "controlplane").rglob("*.py")
        if "__pycache__" not in p.parts and not module_name(p, root).startswith(GENERATED)
    }


MODULES = modules()


@functools.cache
def imports(name: str, path: Path | None = None) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import statement of module ``name``."""
    path = path or MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    type_only = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
        for n in ast.walk(block)
    }
    out: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            names = [alias.name for alias in node.names]
            out.append((target, names))
            # `from . import x` / `from .pkg import mod`: the submodules are imported too.
            out += [(f"{target}.{n}", []) for n in names]
    return out


def graph(found: dict[str, Path] | None = None) -> dict[str, set[str]]:
    """Module → the package's modules it imports (``from pkg import sub`` imports ``pkg.sub``)."""
    found = found or MODULES
    return {
        name: {target for target, _ in imports(name, path) if target in found and target != name}
        for name, path in found.items()
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
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
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_modules_are_found():
    assert {"controlplane.xds.stream", "controlplane.xds.sotw", "controlplane.xds.delta"} <= MODULES.keys()
    assert "controlplane.xds.stream" in graph()["controlplane.xds.sotw"]


def test_the_package_has_no_import_cycle():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_checker_sees_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    """The old echo <-> echoh2c and server <-> delta cycles had one side inside a function."""
    pkg = tmp_path / "controlplane"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import g\n")
    (pkg / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import x\n"
        "def g():\n    from controlplane import a\n"
    )
    (pkg / "c.py").write_text("from . import b\n")
    assert cycles(graph(modules(tmp_path))) == [["controlplane.a", "controlplane.b"]]


def test_no_module_imports_a_private_name_of_another():
    private = [
        f"{name} imports {n} from {target}"
        for name in MODULES
        for target, names in imports(name)
        if target.startswith("controlplane") and target != name
        for n in names
        if n.startswith("_") and not n.startswith("__")
    ]
    assert private == []


def test_sotw_and_delta_never_import_each_other():
    edges = graph()
    assert "controlplane.xds.delta" not in edges["controlplane.xds.sotw"]
    assert "controlplane.xds.sotw" not in edges["controlplane.xds.delta"]


def test_translators_import_neither_grpc_nor_kubernetes():
    translators = [n for n in MODULES if n.startswith("controlplane.gatewayapi.") or n == "controlplane.xds.translator"]
    assert len(translators) > 5
    bad = [
        f"{name} imports {target}"
        for name in translators
        for target, _ in imports(name)
        if target.split(".")[0] in ("grpc", "kubernetes", "kubernetes_asyncio")
    ]
    assert bad == []
