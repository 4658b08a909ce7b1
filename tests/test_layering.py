"""The package layering, read from the sources: no import cycle between the host's packages and
nothing in smmemu (the board) importing above the host's lowest layers.

Every import counts, also the ones inside functions (a cycle that works only because an import
is deferred is still a cycle); only `if TYPE_CHECKING:` blocks are left out.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"codeisland": ROOT / "host" / "codeisland", "smmemu": ROOT / "emulation" / "smmemu"}
# what the board may use of the host: errors, the plan.h mirror, the Transport interface, and
# two leaves that depend on nothing but errors: where build outputs are (paths) and the typed
# ELF/PE views its workload loader reads relocations with (formats)
BOARD_MAY_IMPORT = {
    "codeisland.errors",
    "codeisland.plan.layout",
    "codeisland.transport.base",
    "codeisland.paths",
    "codeisland.formats",
    "codeisland.formats.elf",
    "codeisland.formats.image",
}


def module_name(path: Path) -> str:
    for top, root in SOURCES.items():
        if path.is_relative_to(root):
            parts = [top, *path.relative_to(root).with_suffix("").parts]
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    raise ValueError(path)


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path) -> Iterator[str]:
    """Absolute names of the modules `path` imports (from-imports name module.member too, so
    `from ..plan import layout` is seen as codeisland.plan.layout)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    stack: list[ast.AST] = [ast.parse(path.read_text(), str(path))]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _type_checking_only(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            yield mod
            yield from (f"{mod}.{a.name}" for a in node.names if a.name != "*")
        stack.extend(ast.iter_child_nodes(node))


def package_of(module: str) -> str | None:
    """The layering unit: codeisland.<subpackage or top module>, or smmemu."""
    parts = module.split(".")
    if parts[0] == "smmemu":
        return "smmemu"
    if parts[0] == "codeisland" and len(parts) > 1:
        return f"codeisland.{parts[1]}"
    return None


def known_modules() -> set[str]:
    return {module_name(p) for root in SOURCES.values() for p in root.rglob("*.py")}


def resolve(name: str, known: set[str]) -> str | None:
    """The longest known module that `name` is or lies in (member imports resolve to modules)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def module_graph() -> dict[str, set[str]]:
    known = known_modules()
    graph: dict[str, set[str]] = {}
    for root in SOURCES.values():
        for path in sorted(root.rglob("*.py")):
            me = module_name(path)
            targets = {resolve(n, known) for n in imports(path)}
            graph[me] = {t for t in targets if t is not None and t != me}
    return graph


def package_graph() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for mod, targets in module_graph().items():
        src = package_of(mod)
        if src is None:
            continue
        deps = out.setdefault(src, set())
        deps.update(p for t in targets if (p := package_of(t)) not in (None, src))
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == node:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return sorted(found)


# README "Package layering": a package imports only from lower rows
ROWS = {
    "codeisland.__main__": 10,
    "codeisland.cli": 9,
    "codeisland.bench": 8, "codeisland.doctor": 8,
    "codeisland.loop": 7, "codeisland.native": 7,
    "codeisland.emulator": 6, "codeisland.qemu": 6,
    "codeisland.relocation": 5,
    "codeisland.planning": 4, "codeisland.predict": 4, "codeisland.hw": 4, "smmemu": 4,
    "codeisland.analysis": 3,
    "codeisland.profile": 2, "codeisland.transport": 2, "codeisland.firmware": 2,
    "codeisland.frontend": 2,
    "codeisland.documents": 1, "codeisland.formats": 1, "codeisland.plan": 1,
    "codeisland.paths": 1,  # paths.built_driver raises errors.BuildMissing
    "codeisland.errors": 0, "codeisland.interrupts": 0,
}  # fmt: skip


def test_every_package_has_a_row_and_imports_only_lower_rows() -> None:
    graph = package_graph()
    assert sorted(set(graph) - set(ROWS)) == []  # a new package: give it a row (and README)
    upward = sorted(
        (src, dst) for src, deps in graph.items() for dst in deps if ROWS[dst] >= ROWS[src]
    )
    assert upward == []


def test_no_cycle_between_packages() -> None:
    assert cycles(package_graph()) == []


def test_board_imports_only_the_lowest_host_layers() -> None:
    upward = {
        (mod, t)
        for mod, targets in module_graph().items()
        if mod.startswith("smmemu")
        for t in targets
        if t.startswith("codeisland")
        and t not in BOARD_MAY_IMPORT
        # a package __init__ that only re-exports (codeisland, codeisland.plan) is allowed
        and t not in {"codeisland", "codeisland.plan", "codeisland.transport"}
    }
    assert sorted(upward) == []


def test_cycle_finder_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_imports_resolve_relative_and_member_forms(tmp_path: Path) -> None:
    pkg = tmp_path / "codeisland" / "loop"
    pkg.mkdir(parents=True)
    src = pkg / "x.py"
    src.write_text(
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "from ..plan import layout as L\n"
        "from . import machine\n"
        "def f():\n    import smmemu.guest\n"
        "if TYPE_CHECKING:\n    from ..bench import runner\n"
    )
    saved = dict(SOURCES)
    SOURCES["codeisland"] = tmp_path / "codeisland"
    try:
        got = set(imports(src))
    finally:
        SOURCES.update(saved)
    assert {"codeisland.plan.layout", "codeisland.loop.machine", "smmemu.guest"} <= got
    assert not any(n.startswith("codeisland.bench") for n in got)


def test_the_graph_sees_the_host_and_the_board() -> None:
    graph = package_graph()
    assert "codeisland.relocation" in graph["codeisland.emulator"]
    assert "smmemu" in graph["codeisland.emulator"]
    assert graph["smmemu"] <= {"codeisland.errors", "codeisland.plan", "codeisland.transport",
                               "codeisland.paths", "codeisland.formats"}  # fmt: skip
