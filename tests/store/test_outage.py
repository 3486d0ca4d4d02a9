"""Outages at the store's boundary: what is transient, how long it is waited out, what then.

Real failures only: a SQLite file another process holds under ``BEGIN EXCLUSIVE``, and a
PostgreSQL address nothing listens on.
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError

from runner.errors import StoreError, StoreUnavailable
from runner.models import JobState, Outcome
from runner.store import Database, Store
from runner.store.ledger import Finish, unapplied
from runner.store.outage import OUTAGE_ENV, OutagePolicy, is_transient
from runner.store.records import AttemptStart

from .factories import claim_all, result_of, specs, start_of, submit
from .outages import sqlite_locked

pytestmark = pytest.mark.anyio

QUICK = OutagePolicy(timeout=0.6, wait_initial=0.02, wait_max=0.1, wait_jitter=0.0)
PATIENT = OutagePolicy(timeout=20.0, wait_initial=0.02, wait_max=0.1, wait_jitter=0.0)


def _insert(conn: Connection) -> None:
    conn.execute(text("INSERT INTO t (v) VALUES (1)"))


async def _table(db: Database) -> None:
    async with db.writing() as conn:
        await conn.execute(text("CREATE TABLE t (v INTEGER)"))


@pytest.fixture
def busy_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite gives up on a held lock after 0.1 s (instead of a minute)."""
    monkeypatch.setenv("IMAGERUN_SQLITE_BUSY_S", "0.1")


@pytest.mark.usefixtures("busy_fast")
async def test_a_file_locked_past_the_busy_timeout_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    db = Database(f"sqlite:///{path}", policy=QUICK)
    try:
        await _table(db)
        with sqlite_locked(path, 2.0):
            with pytest.raises(StoreUnavailable, match="database is locked") as caught:
                await db.run_write(_insert)
            assert is_transient(caught.value.__cause__ or caught.value)
            with pytest.raises(StoreUnavailable):
                async with db.writing() as conn:
                    await conn.execute(text("INSERT INTO t (v) VALUES (2)"))
            async with db.reading() as conn:  # WAL: readers go on beside the writer
                assert await conn.scalar(text("SELECT count(*) FROM t")) == 0
    finally:
        await db.close()


@pytest.mark.usefixtures("busy_fast")
async def test_retrying_waits_out_a_lock_shorter_than_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    db = Database(f"sqlite:///{path}", policy=PATIENT)
    try:
        await _table(db)
        with sqlite_locked(path, 1.0):
            began = time.monotonic()
            with anyio.fail_after(15):
                await db.retrying(db.run_write, _insert)
            waited = time.monotonic() - began
        assert waited > 0.5
        assert not db.gone
        async with db.reading() as conn:
            assert await conn.scalar(text("SELECT count(*) FROM t")) == 1
    finally:
        await db.close()


@pytest.mark.usefixtures("busy_fast")
async def test_past_the_limit_every_later_call_fails_at_once(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    db = Database(f"sqlite:///{path}", policy=QUICK)
    try:
        await _table(db)
        with sqlite_locked(path, 1.5):
            began = time.monotonic()
            with pytest.raises(StoreUnavailable, match=r"still after 0\.6 s"):
                await db.retrying(db.run_write, _insert)
            assert 0.5 < time.monotonic() - began < 1.4
        assert db.gone
        began = time.monotonic()
        with pytest.raises(StoreUnavailable, match="imagerun run"):
            await db.retrying(db.run_write, _insert)  # the file is free again: not even tried
        assert time.monotonic() - began < 0.1
    finally:
        await db.close()


async def test_a_postgresql_nobody_listens_on_is_unavailable_not_an_internal_error() -> None:
    db = Database("postgresql://postgres@127.0.0.1:9/imagerun", policy=QUICK)
    try:
        with pytest.raises(StoreUnavailable) as caught:
            async with db.reading() as conn:
                await conn.execute(text("SELECT 1"))
        assert isinstance(caught.value.__cause__, OSError)
        with pytest.raises(StoreUnavailable, match=r"still after 0\.6 s"):
            await db.retrying(db.run_write, _insert)
    finally:
        await db.close()


async def test_a_store_verb_is_retried_and_other_errors_pass_through(store: Store) -> None:
    batch = (await submit(store, "o", specs(1))).batch
    [job] = await claim_all(store, batch.id, "w1")
    start = start_of(job, "w1")
    await store.start_attempt(start)
    with pytest.raises(IntegrityError) as caught:  # a bug, not an outage: not waited on
        async with store.db.writing() as conn:
            await conn.execute(text("INSERT INTO workers (id) VALUES (NULL)"))
    assert not isinstance(caught.value, StoreError)
    assert not is_transient(caught.value)
    assert not store.db.gone


async def test_a_group_written_before_a_failed_commit_is_not_written_twice(store: Store) -> None:
    """A replayed group skips the starts and finishes its first commit already made."""
    batch = (await submit(store, "r", specs(3))).batch
    jobs = await claim_all(store, batch.id, "w1")
    starts = [start_of(job, "w1") for job in jobs]
    await store.start_attempt(starts[0])
    await store.start_attempt(starts[1])
    await store.complete(result_of(starts[1], Outcome.OK), [])
    writes: list[AttemptStart | Finish] = [
        starts[0],
        Finish(job_id=jobs[1].id, state=JobState.SUCCEEDED, result=None),
        starts[2],
        Finish(
            job_id=jobs[1].id, state=JobState.SUCCEEDED, result=result_of(starts[1], Outcome.OK)
        ),
    ]
    async with store.db.reading() as conn:
        left = await conn.run_sync(unapplied, writes, key=lambda w: w)
    # The start already written and the finish already made are dropped; a finish without a
    # result (moving a job) is harmless twice, and the start not written yet stays.
    assert left == [writes[1], starts[2]]


def test_the_limit_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OUTAGE_ENV, "7.5")
    assert OutagePolicy.from_environ().timeout == 7.5
    monkeypatch.delenv(OUTAGE_ENV)
    assert OutagePolicy.from_environ().timeout == 60.0
