"""The shape rules of runner/ hold: no module over 400 lines, no function over 60.

Short modules with one concern each, and functions that fit on a screen, are how the layout
stays readable; these tests fail with the offenders named, so a change that outgrows a rule
splits along a seam instead of drifting. The layering of runner/ is checked by ``lint-imports``
(the contracts in pyproject.toml), run by scripts/test beside ruff and mypy.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

RUNNER = Path(__file__).resolve().parents[1] / "runner"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(RUNNER.rglob("*.py"))


def _functions(tree: ast.Module) -> list[tuple[str, int, int]]:
    """Every function and method of a module (nested ones too): qualified name, first line of
    its ``def`` and how many lines it spans through its last statement."""
    found: list[tuple[str, int, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                found.append(
                    (name, child.lineno, (child.end_lineno or child.lineno) - child.lineno + 1)
                )
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def test_the_walk_sees_the_whole_package() -> None:
    names = {p.relative_to(RUNNER).as_posix() for p in _modules()}
    assert {
        "app.py",
        "abc/__init__.py",
        "run/worker.py",
        "store/ledger.py",
        "cli/__init__.py",
    } <= names


def test_no_module_of_runner_is_over_400_lines() -> None:
    long = {
        p.relative_to(RUNNER).as_posix(): n
        for p in _modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_function_of_runner_is_over_60_lines() -> None:
    long = {
        f"{p.relative_to(RUNNER).as_posix()}:{line} {name}": n
        for p in _modules()
        for name, line, n in _functions(ast.parse(p.read_text(encoding="utf-8")))
        if n > MAX_FUNCTION_LINES
    }
    assert long == {}


def test_the_function_walk_measures_methods_and_nested_functions() -> None:
    source = textwrap.dedent(
        """
        class A:
            async def m(self):
                def inner():
                    return 1

                return inner
        """
    )
    assert _functions(ast.parse(source)) == [("A.m", 3, 5), ("A.m.inner", 4, 2)]
