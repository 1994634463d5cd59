"""Every module imports, and the project's modules import each other without a cycle.

The graph is read from the source with ``ast``: an edge ``a -> b`` for every import of project module ``b`` that
runs when ``a`` is imported (module and class bodies, including ``if``/``try`` blocks; not ``if TYPE_CHECKING:``
blocks, which never run, nor function bodies). A cycle can also hide behind an import inside a function, so
function-level imports of project modules are not allowed either, except as listed below.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mtmedformer", "strategies", "server", "client", "fltesting")

# (importing module, imported module) -> why this function-level import is allowed. Keep it empty.
ALLOWED_FUNCTION_IMPORTS: dict[tuple[str, str], str] = {}

# Entry points: modules no project module imports, so nothing can import back into them and a deferred import
# in them cannot close a cycle (the test checks that nothing imports them). Their function-level imports are
# allowed.
ENTRY_POINTS: dict[str, str] = {
    "mtmedformer.cli": "imports a subcommand's library code (torch, MONAI) only when that subcommand runs",
    "client.entry": "the ClientApp Flower loads: imports client.app (torch, MONAI) only where no warm server runs",
    "client.warm_server": "a process of its own (python -m client.warm_server), started by client/warm.py",
}

Graph = dict[str, set[str]]


def module_files(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of ``packages`` under ``root``."""
    files = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join(parts)] = path
    return files


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(nodes: Iterable[ast.AST], in_function: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Yield ``(import statement, inside a function?)`` for ``nodes`` and everything below them."""
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, in_function
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _imports(ast.iter_child_nodes(node), True)
        elif isinstance(node, ast.If) and _is_type_checking(node):
            yield from _imports(node.orelse, in_function)  # the body runs for type checkers only
        else:  # class bodies, if/try/with/match blocks: they run at import time
            yield from _imports(ast.iter_child_nodes(node), in_function)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The project modules an import statement in ``module`` loads (the deepest known name of each)."""
    def deepest(name: str) -> str | None:
        parts = name.split(".")
        for end in range(len(parts), 0, -1):
            if ".".join(parts[:end]) in known:
                return ".".join(parts[:end])
        return None

    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
        return {t for t in map(deepest, names) if t is not None}
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([base] if base else []))
    found = set()
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        target = sub if sub in known else deepest(base)
        if target is not None:
            found.add(target)
    return found


def import_graph(files: dict[str, Path]) -> tuple[Graph, Graph]:
    """Return the module-level graph and the function-level graph of the project modules in ``files``."""
    known = set(files)
    top: Graph = {name: set() for name in files}
    deferred: Graph = {name: set() for name in files}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, in_function in _imports(tree.body, False):
            targets = _targets(node, name, path.name == "__init__.py", known) - {name}
            (deferred if in_function else top)[name] |= targets
    return top, deferred


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _function_imports(deferred: Graph) -> set[tuple[str, str]]:
    return {(a, b) for a, targets in deferred.items() if a not in ENTRY_POINTS for b in targets}


# ------------------------------------------------------------------------------------------------ the project


def test_every_module_imports():
    # Prepare: a fresh interpreter, so nothing the test session imported first can mask an import-order problem
    script = (
        "import importlib, json, pkgutil, sys\n"
        f"packages = {list(PACKAGES)!r}\n"
        "names, failed = [], {}\n"
        "for package in packages:\n"
        "    module = importlib.import_module(package)\n"
        "    names.append(package)\n"
        "    names += [m.name for m in pkgutil.walk_packages(module.__path__, package + '.')]\n"
        "for name in names:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        failed[name] = f'{type(exc).__name__}: {exc}'\n"
        "print(json.dumps({'names': sorted(names), 'failed': failed}))\n"
    )
    # Execute
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    # Assert
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["failed"] == {}
    assert result["names"] == sorted(module_files(ROOT, PACKAGES))  # the graph below covers every module


def test_no_import_cycle_between_project_modules():
    # Prepare
    top, _ = import_graph(module_files(ROOT, PACKAGES))
    # Execute / Assert
    assert cycles(top) == []


def test_no_function_level_import_of_a_project_module():
    # Prepare
    _, deferred = import_graph(module_files(ROOT, PACKAGES))
    # Execute
    found = _function_imports(deferred)
    # Assert: none beyond the allow-list, and no stale allow-list entry
    assert found - set(ALLOWED_FUNCTION_IMPORTS) == set()
    assert set(ALLOWED_FUNCTION_IMPORTS) - found == set(), "remove allow-list entries whose import is gone"


def test_entry_points_are_imported_by_no_project_module():
    # Prepare
    top, deferred = import_graph(module_files(ROOT, PACKAGES))
    # Execute
    importers = {a for graph in (top, deferred) for a, targets in graph.items() if set(ENTRY_POINTS) & targets}
    # Assert
    assert importers == set()


# ---------------------------------------------------------------------------------------- the checker itself


def _write(root: Path, files: dict[str, str]) -> dict[str, Path]:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return module_files(root, ("pkg",))


def test_the_checker_finds_a_module_level_cycle_and_ignores_type_checking_blocks(tmp_path):
    # Prepare: a -> b -> c -> a at module level (one of them relative, one inside try); d -> a only for typing
    files = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import thing\n",
        "pkg/b.py": "try:\n    from . import c\nexcept ImportError:\n    c = None\n",
        "pkg/c.py": "import pkg.a\n",
        "pkg/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import x\nfrom pkg import b\n",
    })
    # Execute
    top, deferred = import_graph(files)
    # Assert
    assert cycles(top) == [["pkg.a", "pkg.b", "pkg.c"]]
    assert top["pkg.d"] == {"pkg.b"} and all(not targets for targets in deferred.values())


def test_the_checker_sees_a_cycle_hidden_behind_a_function_level_import(tmp_path):
    # Prepare: a imports b at module level, b imports a inside a method
    files = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "import pkg.b\n",
        "pkg/b.py": "class B:\n    def run(self):\n        from pkg.a import go\n        return go()\n",
    })
    # Execute
    top, deferred = import_graph(files)
    # Assert: no module-level cycle, but the deferred import is reported
    assert cycles(top) == []
    assert deferred["pkg.b"] == {"pkg.a"}
    assert cycles({m: top[m] | deferred[m] for m in top}) == [["pkg.a", "pkg.b"]]
