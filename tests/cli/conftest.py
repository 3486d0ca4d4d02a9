"""Fixtures for the CLI tests: ``imagerun`` invoked in-process on a fresh SQLite file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from runner.cli import main

Invoke = Callable[..., Result]


@pytest.fixture
def cli(tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """``cli("submit", path, "-r", "laozhang")``: run ``imagerun`` with this test's db and data.

    The working directory is the test's own, and no config file or ``IMAGERUN_*`` variable
    from the surroundings leaks in.
    """
    monkeypatch.chdir(tmp_path)
    for name in ("IMAGERUN_DB", "IMAGERUN_DATA", "IMAGERUN_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    base = ["--db", sqlite_url, "--data", str(tmp_path / "data")]

    def invoke(*args: str, env: dict[str, str] | None = None, db: bool = True) -> Result:
        return CliRunner().invoke(main, [*(base if db else []), *args], env=env)

    return invoke


def status_json(cli: Invoke) -> dict[str, Any]:
    result = cli("status", "--json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data
