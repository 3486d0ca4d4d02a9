"""Where output goes and how its pieces read: the two consoles, JSON, money, problem lines."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console

from runner.errors import Problem

# Piped output gets a wide, stable layout instead of Rich's 80-column fallback.
console = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 140)


def emit_json(data: Any) -> None:
    """``data`` as indented JSON on stdout (``--json`` output)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def money(usd: float | None) -> str:
    """``$0.0110`` under a dollar, ``$1,234.50`` from one up, ``-`` for none."""
    if usd is None:
        return "-"
    return f"${usd:,.4f}" if usd < 1 else f"${usd:,.2f}"


def say(text: str) -> None:
    """One line of plain text on stdout (no Rich markup or highlighting)."""
    console.print(text, markup=False)


def warn(text: str) -> None:
    """One line of plain text on stderr."""
    err.print(text, markup=False)


def problems(items: Sequence[Problem], truncated: int) -> None:
    """Every problem on its own line on stderr, then how many were left out."""
    for problem in items:
        # One problem, one line, whatever the width: people grep and editors jump to FILE:LINE.
        err.print(str(problem), markup=False, highlight=False, soft_wrap=True)
    if truncated:
        err.print(f"… and {truncated} more problem(s)", markup=False)
