"""The package's layout shows its architecture: subpackages on floors, imports only downward,
no cycles, short modules and functions (docs/ARCHITECTURE.md walks the floors)."""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "vllm_elastic"
# A module may import from a lower floor or from its own subpackage, nothing else.
FLOORS = {
    "params": 0,
    "kernels": 1, "decoding": 1, "cache": 1,
    "models": 2,
    "engine": 3, "oracles": 3,
    "integration": 4,
    "tools": 5,
}
MAX_MODULE_LINES = 250
MAX_FUNCTION_LINES = 60


def modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _runtime_nodes(tree: ast.AST):
    """Every node but those under `if TYPE_CHECKING:` (annotations only, never imported)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            continue
        yield node
        yield from _runtime_nodes(node)


def imports_of(path: pathlib.Path) -> set[str]:
    """Every vllm_elastic module this file imports, at module level or inside functions."""
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and \
                node.module.startswith("vllm_elastic"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("vllm_elastic"))
    return found


def subpackage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_subpackage_has_a_floor():
    assert {subpackage(m) for m in modules()} - {None} == set(FLOORS)


def test_imports_point_only_downward():
    known = modules()
    wrong = []
    for name, path in known.items():
        here = subpackage(name)
        if here is None:
            continue  # the package root registers the plugin: it may name anything
        for target in imports_of(path) & set(known):
            there = subpackage(target)
            if there is None:
                wrong.append(f"{name} -> {target} (the package root)")
            elif there != here and FLOORS[there] >= FLOORS[here]:
                wrong.append(f"{name} (floor {FLOORS[here]}) -> {target} (floor {FLOORS[there]})")
    assert not wrong, "imports that do not point down:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    known = modules()
    graph = {name: sorted(imports_of(path) & set(known) - {name})
             for name, path in known.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1 and nxt != node:
                pytest.fail("import cycle: " + " -> ".join(trail[trail.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])


def test_modules_and_functions_are_short():
    long_modules, long_functions = [], []
    for name, path in modules().items():
        source = path.read_text()
        if source.count("\n") > MAX_MODULE_LINES:
            long_modules.append(f"{name}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{name}.{node.name}: {length} lines")
    assert not long_modules, long_modules
    assert not long_functions, long_functions
