"""The layout says where code runs: checked from the source, so a new import cannot quietly break it.

- The package has no import cycle (``from pkg import name`` counts as importing ``pkg``'s ``__init__``).
- Nothing in the wheel imports the tests (their doubles live in ``tests/doubles``).
- Each bundle of :mod:`pytest_meshcheck.workload.bundle` holds every package module its files import, and
  they import nothing else but the standard library: what runs with ``python3 -I -S`` in a pod.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_meshcheck.workload.bundle import AGENT_FILES, ECHO_FILES, ShippedFile

PACKAGE = Path(__file__).resolve().parents[2] / "pytest_meshcheck"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, *, top_level_only: bool) -> Iterator[str]:
    """Absolute module names imported, without ``if TYPE_CHECKING:`` blocks; ``from a import b`` gives ``a``."""
    nodes = tree.body if top_level_only and isinstance(tree, ast.Module) else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.If) and _is_type_checking(node):
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            # ``from pkg import submodule`` imports the submodule too.
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _skip_type_checking(tree: ast.Module) -> ast.Module:
    tree.body = [n for n in tree.body if not (isinstance(n, ast.If) and _is_type_checking(n))]
    return tree


def _package_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        deps: set[str] = set()
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_package_has_no_import_cycle() -> None:
    assert _cycle(_package_graph()) is None


def test_the_wheel_does_not_import_the_tests() -> None:
    offenders = [
        str(path.relative_to(PACKAGE.parent))
        for path in PACKAGE.rglob("*.py")
        if any(
            name == "tests" or name.startswith("tests.")
            for name in _imports(ast.parse(path.read_text(encoding="utf-8")), top_level_only=False)
        )
    ]
    assert offenders == []


def _is_package_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _required_modules(tree: ast.Module) -> Iterator[str]:
    """Every module importing ``tree`` loads: ``from a import b`` needs ``a``, and ``a.b`` when that is a module."""
    for node in ast.walk(_skip_type_checking(tree)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names if _is_package_module(f"{node.module}.{a.name}"))


@pytest.mark.parametrize(("name", "files"), [("echo", ECHO_FILES), ("agent", AGENT_FILES)])
def test_a_bundle_holds_what_it_imports_and_needs_only_the_standard_library(
    name: str, files: tuple[ShippedFile, ...]
) -> None:
    shipped = {f.path.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for f in files}
    missing: set[str] = set()
    foreign: set[str] = set()
    for f in files:
        for module in _required_modules(ast.parse(f.content())):
            top = module.partition(".")[0]
            if top == "pytest_meshcheck" and module not in shipped:
                missing.add(f"{f.path}: {module}")
            elif top != "pytest_meshcheck" and top not in sys.stdlib_module_names:
                foreign.add(f"{f.path}: {module}")
    assert not missing, f"the {name} bundle lacks modules its files import"
    assert not foreign, f"the {name} bundle imports beyond the standard library"


def test_bundle_keys_and_paths_are_unique() -> None:
    for files in (ECHO_FILES, AGENT_FILES):
        assert len({f.key for f in files}) == len(files)
        assert len({f.path for f in files}) == len(files)
