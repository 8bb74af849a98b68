"""The package's shape, checked from its source: no import cycle, no module past 600 lines, no
reach into another module's underscore names, and one place for each shared mechanism.

The import graph is read with `ast` from every module of `keras_mle` and from `keras_mle_cli`,
imports inside functions included (an import moved into a function to dodge a cycle is still a
cycle), and a module named by a string literal (`importlib.import_module("keras_mle.cli")`)
counts as imported. Importing a submodule runs its package's `__init__` first; that edge is
Python's, not a dependency of the module, and is not drawn.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
MAX_LINES = 600


def _source_files():
    files = sorted((ROOT / "keras_mle").rglob("*.py"))
    front = ROOT / "keras_mle_cli"
    files += sorted(front.rglob("*.py")) if front.is_dir() else [ROOT / "keras_mle_cli.py"]
    return [f for f in files if f.exists()]


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in _source_files()}
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def _known(name: str) -> str | None:
    """The longest prefix of `name` that is one of the package's modules."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(name: str, tree: ast.Module):
    """(line, imported module, imported name or None) for every import in the module."""
    is_package = MODULES[name].name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                yield node.lineno, module, alias.name
        elif isinstance(node, ast.Call):
            for arg in node.args[:1]:
                if isinstance(arg, ast.Constant) and arg.value in MODULES:
                    yield node.lineno, arg.value, None


def _graph() -> dict:
    graph = {name: set() for name in MODULES}
    for name, tree in TREES.items():
        for _, module, imported in _imports(name, tree):
            full = f"{module}.{imported}" if imported else module
            target = _known(full) if full in MODULES else _known(module)
            if target and target != name:
                graph[name].add(target)
    return graph


def _cycles(graph: dict) -> list:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_checker_sees_a_cycle_through_a_function_level_import():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    tree = ast.parse("def f():\n    from keras_mle import data\n")
    assert [module for _, module, _ in _imports("keras_mle.loops", tree)] == ["keras_mle"]


def test_no_import_cycle():
    assert _cycles(_graph()) == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_over_600_lines(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines (at most {MAX_LINES})"


def _private_accesses(name: str, tree: ast.Module) -> list:
    found = []
    for line, module, imported in _imports(name, tree):
        if imported and imported.startswith("_") and not imported.startswith("__"):
            found.append(f"{name}:{line}: from {module} import {imported}")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        if not node.attr.startswith("_") or node.attr.startswith("__"):
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
            continue
        if isinstance(owner, ast.Call) and getattr(owner.func, "id", None) == "super":
            continue
        found.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_access_to_other_modules_or_objects_underscore_names():
    found = [f for name, tree in TREES.items() for f in _private_accesses(name, tree)]
    assert found == []


def test_no_mutable_state_at_module_level():
    """No module-level registry or cache (state belongs to objects); public UPPER_CASE tables
    written as literals are constants."""
    containers = ("dict", "list", "set", "defaultdict", "WeakKeyDictionary", "WeakValueDictionary")
    found = []
    for name, tree in TREES.items():
        for node in tree.body:
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AnnAssign):
                targets = [node.target]
            else:
                continue
            value = node.value
            built = isinstance(value, ast.Call) and (
                getattr(value.func, "id", None) in containers
                or getattr(value.func, "attr", None) in containers
            )
            literal = isinstance(value, (ast.Dict, ast.List, ast.Set))
            for target in targets:
                if not isinstance(target, ast.Name) or target.id.startswith("__"):
                    continue
                constant = target.id.isupper() and not target.id.startswith("_")
                if built or (literal and not constant):
                    found.append(f"{name}: {target.id}")
    assert found == []
