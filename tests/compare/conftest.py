"""Fixtures for the comparison tests: manifests of generations and edits, the live sandbox."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from runner.cli.demo import sandbox_environ
from runner.config import Settings, load_settings
from runner.run.worker import RunOptions
from runner.sandbox import SandboxConfig, SandboxHandle, running_sandbox

EXAMPLES = Path(__file__).resolve().parents[2] / "jobs" / "examples"
#: A rate told far above what the sandbox serves: these tests are about comparisons, their pages
#: and exports, not pacing (a sandbox route nobody gave a rate starts at a quarter of its 600 a
#: minute and doubles every 2 s: most of a 400-job comparison's time).
TOLD_RPM = 60_000
FAST = RunOptions(retry_scale=0, handle_signals=False, rpm=TOLD_RPM)
HOSTILE = '<script>alert("pwned")</script> & "quotes" \'apos\' <img src=x onerror=alert(1)>'


def write_manifest(
    path: Path, count: int, *, edits_every: int = 2, ignore_every: int = 4, size: bool = True
) -> Path:
    """``count`` lines: every ``edits_every``-th an edit of the example mug (a relative path),
    every ``ignore_every``-th edit told to ignore its source; hostile text in some prompts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.parent / "sources").mkdir(exist_ok=True)
    mug = path.parent / "sources" / "mug.png"
    mug.write_bytes((EXAMPLES / "sources" / "mug.png").read_bytes())
    lines = []
    for i in range(count):
        line: dict[str, Any] = {
            "id": f"p{i:03d}",
            "prompt": f"item {i}: a product shot " + (HOSTILE if i % 5 == 0 else ""),
            "metadata": {"note": HOSTILE},
        }
        if size:
            line["size"] = "1536x1024"
        if i % edits_every == 1:
            line["images"] = ["sources/mug.png"]
            if i % ignore_every == 1:
                line["prompt"] += " #IGNORE_SOURCE#"
        lines.append(json.dumps(line))
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


@pytest.fixture
def sandbox() -> Iterator[SandboxHandle]:
    """The sandbox as a real HTTP server on loopback."""
    with running_sandbox(SandboxConfig()) as handle:
        yield handle


def sandbox_settings(handle: SandboxHandle, work: Path, url: str | None = None) -> Settings:
    """Settings with every sandbox route pointed at ``handle``."""
    return load_settings(
        db=url or f"sqlite+aiosqlite:///{work / 'imagerun.db'}",
        data=work / "data",
        environ=sandbox_environ(handle, dict(os.environ)),
    )


def names(items: Sequence[Any]) -> list[str]:
    return [getattr(i, "route", str(i)) for i in items]
