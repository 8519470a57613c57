"""The package's layers, read from its imports (issue 13): the core never reaches up to the edge.

Core packages (``lisp``, ``rib``, ``alt``, ``mapping``, ``bgp``) and the low shared modules must
not import ``node``, ``lab``, ``api`` or ``commands``; no two packages import each other (directly
or around a longer cycle); and no module imports itself back through another.  Only module-level
and function-level ``import`` statements count (``TYPE_CHECKING`` blocks too: a type that belongs
to the edge is still a dependency on it).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import alt_router

ROOT = Path(alt_router.__file__).parent
CORE = ("lisp", "rib", "alt", "mapping", "bgp")
EDGE = ("node", "lab", "api", "commands")
# Modules at the top of the package that the core may use (shared, I/O-free helpers).
LOW = ("inet", "logsummary", "types")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports() -> dict[str, set[str]]:
    """module -> the alt_router modules it imports."""
    out: dict[str, set[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        name = module_name(path)
        found: set[str] = set()
        tree = ast.parse(path.read_text(), str(path))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("alt_router")}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    target = ".".join([*base, node.module] if node.module else base)
                else:
                    target = node.module or ""
                if target.startswith("alt_router"):
                    found.add(target)
        out[name] = found
    return out


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_core_does_not_import_the_edge() -> None:
    wrong = sorted(
        f"{mod} imports {dep}"
        for mod, deps in imports().items()
        if package_of(mod) in (*CORE, *LOW)
        for dep in deps
        if package_of(dep) in EDGE
    )
    assert wrong == []


def test_no_package_cycles() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for mod, deps in imports().items():
        src = package_of(mod)
        for dep in deps:
            dst = package_of(dep)
            if src and dst and src != dst:
                graph[src].add(dst)
    assert find_cycles(graph) == []


def test_no_module_cycles() -> None:
    graph = {mod: {d for d in deps if d != mod} for mod, deps in imports().items()}
    # A package's __init__ re-exporting its own modules is not a cycle of design.
    for mod in list(graph):
        graph[mod] = {d for d in graph[mod] if not mod.startswith(d + ".") and not d.startswith(mod + ".")}
    assert find_cycles(graph) == []


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(cycles)


def test_the_checker_finds_a_cycle() -> None:
    # The check itself must be able to fail.
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def _class_names(root: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                found[node.name].append(str(path.relative_to(root)))
    return found


def test_every_class_name_is_defined_once() -> None:
    """Issue 13: two classes with one name (``Announce`` in the RIB and in the Map-Server's actions)
    made a reader guess which one an import meant; each class says what it is, once."""
    twice = {name: where for name, where in _class_names(ROOT).items() if len(where) > 1}
    assert twice == {}


def test_the_class_name_check_sees_a_twin(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("class Site:\n    pass\n")
    (tmp_path / "b.py").write_text("class Site:\n    pass\nclass Other:\n    pass\n")
    assert {n: w for n, w in _class_names(tmp_path).items() if len(w) > 1} == {"Site": ["a.py", "b.py"]}
