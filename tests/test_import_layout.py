"""The package's import graph: every module imports alone, and no two parts of the package import each other.

A cycle between modules only works while some import sits inside a function; these tests catch one as it appears.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The checkout's folders and the module names they install as (pyproject's package-dir).
SOURCE_ROOTS = {"hvae_pipeline": REPO / "hvae_pipeline", "hvae_pipeline.training": REPO / "training",
                "hvae_pipeline.demo": REPO / "demo"}


def package_modules() -> dict[str, Path]:
    modules = {}
    for prefix, folder in SOURCE_ROOTS.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([prefix, *parts])] = path
    return modules


def imported_modules(module: str, path: Path, known: set[str]) -> set[str]:
    """Package modules ``module`` imports anywhere in its body (functions included), except type-checking blocks."""
    tree = ast.parse(path.read_text())
    type_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                 and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
                 for statement in block.body for node in ast.walk(statement)}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def part_of(module: str) -> str:
    """The package part a module belongs to: its subpackage, or the root module itself."""
    parts = module.split(".")
    if module in SOURCE_ROOTS or len(parts) == 1:
        return module
    return ".".join(parts[:2])


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for child in sorted(graph.get(node, ())):
            if state.get(child) == 1:
                return stack[stack.index(child):] + [child]
            if child not in state and (cycle := visit(child)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_cycle_between_modules_or_between_subpackages():
    modules = package_modules()
    known = set(modules)
    module_graph = {name: imported_modules(name, path, known) for name, path in modules.items()}
    # A package's __init__ importing its own modules is how packages expose names, not a cycle.
    module_graph = {name: {dep for dep in deps if not name.startswith(dep + ".") and not dep.startswith(name + ".")}
                    for name, deps in module_graph.items()}
    assert find_cycle(module_graph) is None, f"import cycle between modules: {' -> '.join(find_cycle(module_graph))}"
    part_graph: dict[str, set[str]] = {}
    for name, deps in module_graph.items():
        if name == "hvae_pipeline":
            continue  # the root __init__ re-exports the public API
        source = part_of(name)
        part_graph.setdefault(source, set()).update(part_of(dep) for dep in deps
                                                    if part_of(dep) != source and dep != "hvae_pipeline")
    cycle = find_cycle(part_graph)
    assert cycle is None, f"import cycle between parts of the package: {' -> '.join(cycle)}"


def test_the_package_root_holds_only_public_entry_points():
    loose = sorted(path.name for path in (REPO / "hvae_pipeline").glob("*.py"))
    assert loose == ["__init__.py", "bundled_model.py", "pipeline.py"]


def test_cycle_finder_reports_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def _import_alone(module: str) -> tuple[str, int, str]:
    result = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, cwd=REPO,
                            timeout=300)
    return module, result.returncode, result.stderr[-2000:]


@pytest.mark.slow
def test_every_module_imports_alone_in_a_fresh_interpreter():
    with ThreadPoolExecutor(max_workers=2) as pool:
        failures = [(module, err) for module, code, err in pool.map(_import_alone, sorted(package_modules())) if code]
    assert not failures, "\n\n".join(f"{module}:\n{err}" for module, err in failures)
