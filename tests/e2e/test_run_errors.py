"""What a run that fails reports: the error that stopped it, not one met while cleaning up."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest

from runner.run.worker import Runner
from runner.sandbox import SandboxConfig
from tests.store.outages import sqlite_locked

from .conftest import MakeWorld

pytestmark = pytest.mark.anyio


async def test_a_bug_while_the_database_is_away_is_reported_as_the_bug(
    world: MakeWorld, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The run breaks (a bug) while another process holds the SQLite file past the outage
    limit: the bug is what the run raises, not the database being away while the worker
    row was being closed."""
    monkeypatch.setenv("IMAGERUN_SQLITE_BUSY_S", "0.1")
    monkeypatch.setenv("IMAGERUN_DB_OUTAGE_S", "0.5")
    w = world(SandboxConfig())
    await w.submit([{"prompt": "a lamp"}], "sandbox")
    db = Path(w.db_url.split("///", 1)[1])

    held = ExitStack()

    async def broken(self: Runner, lanes: object) -> None:
        held.enter_context(sqlite_locked(db, 3.0))  # until the run has ended
        raise RuntimeError("a bug in the run")

    monkeypatch.setattr(Runner, "_work", broken)
    with held, pytest.raises(BaseException) as raised:
        await w.run()

    group = raised.value
    leaves = group.exceptions if isinstance(group, BaseExceptionGroup) else (group,)
    assert [str(e) for e in leaves] == ["a bug in the run"], repr(group)
