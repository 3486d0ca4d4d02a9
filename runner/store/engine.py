"""Engine creation per dialect: SQLite (WAL, immediate transactions) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar
from weakref import WeakKeyDictionary

import anyio
from sqlalchemy import Connection, Engine, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from runner.errors import ConfigError

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_DB = "sqlite+aiosqlite:///imagerun.db"
#: Execution option marking a connection that only reads.
READ_ONLY = "imagerun_read_only"


def normalise_url(url: str) -> str:
    """Accept the plain dialect names users type and map them to our async drivers."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"not a database URL: {url!r}") from exc
    driver = parsed.drivername
    if driver in ("sqlite", "sqlite+pysqlite"):
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif driver in ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif parsed.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        raise ConfigError(
            f"unsupported database {driver!r}: use sqlite+aiosqlite:///FILE "
            "or postgresql+asyncpg://USER@HOST/DB"
        )
    return parsed.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def create_engine(url: str) -> AsyncEngine:
    """An async engine configured for imagerun's access pattern on this dialect."""
    url = normalise_url(url)
    if is_sqlite(url):
        return _sqlite_engine(url)
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


def _sqlite_engine(url: str) -> AsyncEngine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, connect_args={"timeout": 60})
    _configure_sqlite(engine.sync_engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver so that we can issue BEGIN IMMEDIATE:
        # several processes may share the file, and a deferred transaction that later needs
        # the write lock would fail with "database is locked" instead of waiting for it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Reads (see ``reading``) take no write lock; WAL lets them run beside a writer.
        mode = "" if connection.get_execution_options().get(READ_ONLY) else " IMMEDIATE"
        connection.exec_driver_sql(f"BEGIN{mode}")


_SYNC_TWINS: WeakKeyDictionary[AsyncEngine, Engine] = WeakKeyDictionary()


def sqlite_sync_twin(engine: AsyncEngine) -> Engine:
    """A synchronous engine on the same SQLite file, for work done in one worker thread.

    aiosqlite hops to its thread and back for every statement; a transaction of a few
    statements then costs milliseconds on a busy event loop. Work that is many statements but
    one logical step (a group commit) runs instead as one call in a worker thread, on this
    engine (same pragmas, same BEGIN IMMEDIATE).
    """
    twin = _SYNC_TWINS.get(engine)
    if twin is None:
        url = engine.url.set(drivername="sqlite")
        twin = create_sync_engine(
            url, connect_args={"timeout": 60, "check_same_thread": False}, poolclass=StaticPool
        )
        _configure_sqlite(twin)
        _SYNC_TWINS[engine] = twin
    return twin


_WRITE_LOCKS: WeakKeyDictionary[AsyncEngine, anyio.Lock] = WeakKeyDictionary()


@asynccontextmanager
async def writing(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A write transaction, committed on exit (rolled back on error).

    On SQLite, writers of this process take turns on an in-process lock first. SQLite has one
    writer at a time anyway, and a connection that finds the file locked waits in sqlite's busy
    handler, which sleeps in steps of milliseconds: queueing here instead keeps many concurrent
    jobs from turning every commit into a sleep. Other processes still meet at BEGIN IMMEDIATE.
    """
    if engine.dialect.name != "sqlite":
        async with engine.begin() as conn:
            yield conn
        return
    async with write_lock(engine), engine.begin() as conn:
        yield conn


async def run_write(
    engine: AsyncEngine,
    fn: Callable[Concatenate[Connection, P], T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """Run ``fn(conn, ...)`` as one write transaction, committed before returning.

    On SQLite the whole function runs in one worker-thread hop on the synchronous twin (see
    :func:`sqlite_sync_twin`); on PostgreSQL it runs on the async connection via ``run_sync``.
    Hot-path verbs (claim, ledger writes) use this; the rest use :func:`writing`.
    """
    if engine.dialect.name != "sqlite":
        async with engine.begin() as conn:
            return await conn.run_sync(fn, *args, **kwargs)

    def in_thread() -> T:
        with sqlite_sync_twin(engine).begin() as conn:
            return fn(conn, *args, **kwargs)

    async with write_lock(engine):
        done = asyncio.wrap_future(_writer_thread(engine).submit(in_thread))
        with anyio.CancelScope(shield=True):  # a started transaction is always seen through
            result = await done
    return result


_WRITER_THREADS: WeakKeyDictionary[AsyncEngine, ThreadPoolExecutor] = WeakKeyDictionary()


def _writer_thread(engine: AsyncEngine) -> ThreadPoolExecutor:
    """One thread per engine for :func:`run_write` (cheaper than anyio's pool for many hops:
    the writes are serialised by the write lock anyway)."""
    pool = _WRITER_THREADS.get(engine)
    if pool is None:
        pool = _WRITER_THREADS[engine] = ThreadPoolExecutor(1, "imagerun-sqlite-writer")
    return pool


def dispose_sync_twin(engine: AsyncEngine) -> None:
    if (pool := _WRITER_THREADS.pop(engine, None)) is not None:
        pool.shutdown(wait=True)
    if (twin := _SYNC_TWINS.pop(engine, None)) is not None:
        twin.dispose()


def write_lock(engine: AsyncEngine) -> anyio.Lock:
    """This process's turn-taking lock for SQLite writers (see :func:`writing`)."""
    lock = _WRITE_LOCKS.get(engine)
    if lock is None:
        lock = _WRITE_LOCKS[engine] = anyio.Lock()
    return lock


@asynccontextmanager
async def reading(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for queries that only read (no write lock on SQLite)."""
    async with engine.connect() as conn:
        await conn.execution_options(**{READ_ONLY: True})
        yield conn
