"""Helpers shared by the manifest tests (a uniquely named module, not a conftest)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from PIL import Image

from runner.errors import Problem
from runner.models import JobSpec

Scan = Callable[..., tuple[list[JobSpec], list[Problem]]]


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (64, 48), mode: str = "RGB") -> bytes:
    """A small real image encoded with Pillow."""
    color: Any = (200, 30, 30, 255) if mode == "RGBA" else (200, 30, 30)
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format=fmt)
    return buffer.getvalue()


def write_jsonl(path: Path, rows: Iterable[dict[str, Any] | str]) -> Path:
    """Write rows (dicts as JSON, strings verbatim) one per line."""
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def where(problems: Iterable[Problem]) -> list[tuple[int, str]]:
    """(line, field) of each problem: what most tests pin."""
    return [(p.line, p.field) for p in problems]
