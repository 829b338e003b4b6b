"""
The package's shape, checked: imports run one way, down the layers, and never in
a circle; no module or function grows past what a reader takes in at once.

Every import counts, ``TYPE_CHECKING`` and function-local ones included: an import
that is only there for a type still means the lower layer knows the upper one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pypicached

#: The package as imported: the checkout's, or the installed one when the Debian package's tests run.
PACKAGE = Path(pypicached.__file__).resolve().parent

#: From the bottom up; a module may import from its own layer or the ones below.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("pypicached", "pypicached.base"),
    ("pypicached.simpleapi",),
    ("pypicached.upstream",),
    ("pypicached.cache",),
    ("pypicached.policy",),
    ("pypicached.http", "pypicached.ops", "pypicached.config"),
    ("pypicached.service", "pypicached.tap"),
    ("pypicached.admin",),
)
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 40


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def layer_of(module: str) -> int:
    """The layer of ``module``: that of the longest name in ``LAYERS`` it falls under."""
    best, depth = -1, -1
    for number, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and name.count(".") > depth:
                best, depth = number, name.count(".")
    assert best >= 0, f"{module} is in no layer: add it to LAYERS"
    return best


def imports_of(module: str) -> set[str]:
    """The package's modules that ``module`` imports, anywhere in it."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            # ``from package import module`` names a module; ``from module import name`` does not
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
                found |= _packages_run_first(name, module)
    return found


def _packages_run_first(name: str, importer: str) -> set[str]:
    """
    The packages whose ``__init__`` runs when ``name`` is imported: its parents, but for those
    of ``importer`` itself (already running by then). An ``__init__`` that imports its package's
    modules makes these real edges: ops.control importing http.acme runs http/__init__.
    """
    own = {importer.rsplit(".", n)[0] for n in range(importer.count(".") + 1)}
    parents = {name.rsplit(".", n)[0] for n in range(1, name.count(".") + 1)}
    return {p for p in parents if p in MODULES and p not in own}


GRAPH = {module: imports_of(module) for module in MODULES}


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        layer_of(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_down_the_layers(module: str) -> None:
    upward = sorted(name for name in GRAPH[module] if layer_of(name) > layer_of(module))
    assert not upward, f"{module} (layer {layer_of(module)}) imports from above it: {upward}"


def cycles_in(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components: each with more than one module is a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for name in graph[module]:
            if name not in index:
                visit(name)
                low[module] = min(low[module], low[name])
            elif name in stack:
                low[module] = min(low[module], index[name])
        if low[module] == index[module]:
            component = []
            while (name := stack.pop()) != module:
                component.append(name)
            if component:
                cycles.append(sorted([module, *component]))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return cycles


def test_no_import_cycles() -> None:
    assert not cycles_in(GRAPH), f"import cycles: {cycles_in(GRAPH)}"


def test_the_checks_would_fail() -> None:
    """The checkers themselves: a made-up cycle is found, an upward import is seen as one, real imports are read."""
    assert cycles_in({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles_in({"a": {"b"}, "b": set()}) == []
    assert layer_of("pypicached.http.web") > layer_of("pypicached.cache.pages") == layer_of("pypicached.cache")
    assert "pypicached.cache.pages" in GRAPH["pypicached.cache.router"]
    assert "pypicached.base.names" in GRAPH["pypicached.simpleapi.simple"]
    # importing another package's module runs that package's __init__ first; one's own is running already
    assert _packages_run_first("pypicached.http.acme", "pypicached.ops.control") == {"pypicached.http"}
    assert _packages_run_first("pypicached.cache.forms", "pypicached.cache.pages") == set()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_and_functions_stay_small(module: str) -> None:
    path = MODULES[module]
    text = path.read_text()
    lines = text.count("\n")
    assert lines <= MAX_MODULE_LINES, f"{path.name}: {lines} lines (at most {MAX_MODULE_LINES})"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"  # type: ignore[operator]
        for node in ast.walk(ast.parse(text))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES  # type: ignore[operator]
    ]
    assert not long, f"{path.name}: functions over {MAX_FUNCTION_LINES} lines: {long}"
