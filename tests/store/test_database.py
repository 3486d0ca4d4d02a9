"""Database: one object per database owns its engine, writer lock, sync twins and writer thread."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import anyio
import pytest
from sqlalchemy import Connection, text

from runner.store import Database, Store
from runner.store.database import CHECKPOINT_EVERY, INLINE_BUDGET_S

pytestmark = pytest.mark.anyio


def _insert(conn: Connection, value: int) -> int:
    conn.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": value})
    return int(conn.scalar(text("SELECT count(*) FROM t")) or 0)


async def _make_table(db: Database) -> None:
    async with db.writing() as conn:
        await conn.execute(text("CREATE TABLE t (v INTEGER NOT NULL)"))


async def test_a_write_in_the_writer_thread_is_committed_when_it_returns(db_url: str) -> None:
    db = Database(db_url)
    other = Database(db_url)
    try:
        await _make_table(db)
        assert await db.run_write(_insert, 1) == 1
        async with other.reading() as conn:
            assert await conn.scalar(text("SELECT sum(v) FROM t")) == 1
    finally:
        await db.close()
        await other.close()


async def test_two_databases_keep_their_own_writer_state(tmp_path: Path) -> None:
    first = Database(f"sqlite:///{tmp_path / 'a.db'}")
    second = Database(f"sqlite:///{tmp_path / 'b.db'}")
    try:
        await _make_table(first)
        await _make_table(second)
        async with first.writing() as conn:
            # The first file's writer lock is held: the second file's writers do not wait on it.
            await conn.execute(text("INSERT INTO t (v) VALUES (1)"))
            with anyio.fail_after(5):
                assert await second.run_write(_insert, 2) == 1
        assert first._inline_conn is None  # no write of its own went through run_write
        assert second._inline_conn is not None
        assert first._write_lock is not second._write_lock
    finally:
        await first.close()
        await second.close()


async def test_concurrent_writers_of_one_database_take_turns(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    try:
        await _make_table(db)
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for i in range(50):
                    tg.start_soon(db.run_write, _insert, i)
        async with db.reading() as conn:
            assert await conn.scalar(text("SELECT count(*) FROM t")) == 50
    finally:
        await db.close()


async def _locked_elsewhere_then_written(db: Database, other: Database, value: int) -> int:
    """``db.run_write`` while ``other`` holds the file's write lock for a moment; returns what
    the write returned, after checking that the event loop kept running while it waited."""
    ticks = 0
    got: list[int] = []

    async def tick() -> None:
        nonlocal ticks
        while not got:
            ticks += 1
            await anyio.sleep(0.01)

    async def write() -> None:
        got.append(await db.run_write(_insert, value))

    async with other.writing() as conn:
        await conn.execute(text("INSERT INTO t (v) VALUES (0)"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(tick)
            tg.start_soon(write)
            await anyio.sleep(0.3)
            assert not got  # still waiting for the lock
            assert ticks >= 10  # and not on the event loop
            # The other connection commits (leaving the block) while the task group waits.
            tg.cancel_scope.deadline = anyio.current_time() + 30
            await conn.commit()
    return got[0]


async def test_a_write_that_finds_the_file_locked_waits_in_the_writer_thread(
    sqlite_url: str,
) -> None:
    """The event loop never waits for another connection's lock: the write goes to the
    writer thread, which waits there, and commits once the lock is free."""
    db, other = Database(sqlite_url), Database(sqlite_url)
    try:
        await _make_table(db)
        with anyio.fail_after(20):
            assert await db.run_write(_insert, 1) == 1  # on the loop: the lock was free
            assert db._writer is None
            assert await _locked_elsewhere_then_written(db, other, 2) == 3
        assert db._writer is not None
        async with db.reading() as conn:
            assert await conn.scalar(text("SELECT sum(v) FROM t")) == 3
    finally:
        await db.close()
        await other.close()


async def test_the_wal_is_checkpointed_while_writes_run_on_the_event_loop(
    sqlite_url: str,
) -> None:
    """The event loop's connection never checkpoints; the writer thread does, so a long run
    of writes leaves a WAL of a few commits' size, not of all of them."""
    db = Database(sqlite_url)
    try:
        await _make_table(db)
        async with db.writing() as conn:
            await conn.execute(text("CREATE TABLE blobs (b BLOB NOT NULL)"))

        def big(conn: Connection) -> None:
            conn.execute(text("INSERT INTO blobs (b) VALUES (randomblob(40000))"))

        for _ in range(4 * CHECKPOINT_EVERY):
            await db.run_write(big)
        wal = Path(f"{db.engine.url.database}-wal")
        # Every commit appended ~40 kB; all of them would be over 10 MB.
        assert wal.stat().st_size < 2 * CHECKPOINT_EVERY * 45_000
        async with db.reading() as conn:
            assert await conn.scalar(text("SELECT count(*) FROM blobs")) == 4 * CHECKPOINT_EVERY
    finally:
        await db.close()


async def test_close_stops_the_writer_thread_and_a_reopened_one_works(sqlite_url: str) -> None:
    db, other = Database(sqlite_url), Database(sqlite_url)
    await _make_table(db)
    with anyio.fail_after(20):
        await _locked_elsewhere_then_written(db, other, 1)
    await other.close()
    writer = db._writer
    assert writer is not None
    await db.close()
    assert db._writer is None
    assert db._twin is None
    assert db._inline is None
    assert writer._shutdown
    again = Database(sqlite_url)
    try:
        assert await again.run_write(_insert, 2) == 3
    finally:
        await again.close()


async def test_the_store_is_built_on_the_database_it_is_given(sqlite_url: str) -> None:
    store = await Store.open(sqlite_url)
    try:
        assert store.db.url == store.url
        assert store.engine is store.db.engine
        assert store.safe_url == store.db.safe_url
        assert store.dialect == "sqlite"
    finally:
        await store.close()


def test_plain_urls_are_mapped_to_the_async_drivers() -> None:
    assert Database("sqlite:///x.db").url.startswith("sqlite+aiosqlite:")
    assert Database("postgresql://u@h/db").dialect == "postgresql"


async def test_a_write_too_slow_for_the_event_loop_is_done_in_the_writer_thread_next_time(
    sqlite_url: str,
) -> None:
    """A write that holds the event loop (a claim of thousands of jobs, as a Batch API lane
    takes, held every request in flight and every timer of the process for 200 ms) runs in
    the writer thread the next times, with the loop turning meanwhile; once it is quick
    there, it is back on the loop."""
    db = Database(sqlite_url)
    ran_in: list[int] = []
    slow = True

    def write(conn: Connection) -> None:
        conn.execute(text("INSERT INTO t (v) VALUES (1)"))
        ran_in.append(threading.get_ident())
        if slow:
            time.sleep(INLINE_BUDGET_S * 4)  # SQLite at work, past what the loop can spare

    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.001)
            ticks += 1

    loop = threading.get_ident()
    try:
        await _make_table(db)
        async with anyio.create_task_group() as tg:
            tg.start_soon(tick)
            await db.run_write(write)  # on the loop: found too slow for it
            ticks = 0
            await db.run_write(write)  # in the thread, the loop turning
            turned = ticks
            slow = False
            await db.run_write(write)  # quick in the thread: back on the loop
            await db.run_write(write)
            tg.cancel_scope.cancel()
        assert ran_in[0] == loop
        assert ran_in[1] != loop
        assert turned > 0
        assert ran_in[2] != loop
        assert ran_in[3] == loop
        async with db.reading() as conn:
            assert await conn.scalar(text("SELECT count(*) FROM t")) == 4
    finally:
        await db.close()
