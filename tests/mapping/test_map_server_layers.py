"""Issue 13: the Map-Server core is a strict lower layer (it takes ``Site``, the node translates config)."""

from __future__ import annotations

import ast
import pathlib

from alt_router.mapping import map_server, negative

EDGE = ("alt_router.node", "alt_router.lab", "alt_router.api", "alt_router.commands")


def imported_modules(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return out


def test_the_map_server_core_imports_no_edge_module() -> None:
    for module in (map_server, negative):
        assert module.__file__ is not None
        bad = {m for m in imported_modules(pathlib.Path(module.__file__)) if m.startswith(EDGE)}
        assert bad == set(), f"{module.__name__} imports {bad}"
