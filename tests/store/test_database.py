"""Database: one object per database owns its engine, writer lock, sync twin and writer thread."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from sqlalchemy import Connection, text

from runner.store import Database, Store

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
        assert first._writer is None  # no hop to a thread was needed there
        assert second._writer is not None
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


async def test_close_stops_the_writer_thread_and_a_reopened_one_works(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    await _make_table(db)
    await db.run_write(_insert, 1)
    writer = db._writer
    assert writer is not None
    await db.close()
    assert db._writer is None
    assert db._twin is None
    assert writer._shutdown
    again = Database(sqlite_url)
    try:
        assert await again.run_write(_insert, 2) == 2
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
