"""Engine creation per dialect: SQLite (WAL, immediate transactions) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import StaticPool

from runner.errors import ConfigError
from runner.store.direct import execute_driver
from runner.store.outage import translated

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

#: Seconds a connection to PostgreSQL may take to open.
PG_CONNECT_TIMEOUT = 10.0
#: Environment variable: seconds a SQLite statement waits for a lock another connection holds
#: (default 60) before it fails as "database is locked" (then the outage policy waits on).
SQLITE_BUSY_ENV = "IMAGERUN_SQLITE_BUSY_S"
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


def sqlite_busy_timeout() -> float:
    """SQLite's busy timeout in seconds (``IMAGERUN_SQLITE_BUSY_S``, default 60)."""
    raw = os.environ.get(SQLITE_BUSY_ENV, "").strip()
    return float(raw) if raw else 60.0


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def create_engine(url: str) -> AsyncEngine:
    """An async engine configured for imagerun's access pattern on this dialect."""
    url = normalise_url(url)
    if is_sqlite(url):
        return _sqlite_engine(url)
    # A connect that hangs (a network blip drops packets) fails after PG_CONNECT_TIMEOUT and is
    # tried again by the outage policy, instead of waiting out asyncpg's own minute.
    return create_async_engine(
        url,
        pool_size=10,
        max_overflow=10,
        pool_pre_ping=True,
        connect_args={"timeout": PG_CONNECT_TIMEOUT},
    )


def _sqlite_engine(url: str) -> AsyncEngine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, connect_args={"timeout": sqlite_busy_timeout()})
    _configure_sqlite(engine.sync_engine)
    return engine


def _bound_as_null(value: None) -> None:
    return value


def _configure_sqlite(engine: Engine, *, inline: bool = False) -> None:
    # The driver asks the adapter registry about every bound value not an int, float, str or
    # bytes, None included, and with no adapter registered for it, builds and discards an
    # AttributeError looking for one (a finishing write binds a dozen NULLs a job). Adapted
    # to itself, None is still bound as NULL. Process-wide, and the same for every caller.
    sqlite3.register_adapter(type(None), _bound_as_null)

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
        if inline:
            # On the event loop: never wait for another process's lock (the caller then
            # writes in its thread instead), and never checkpoint (a checkpoint syncs the
            # file to disk; the caller has the writer thread do it).
            cursor.execute("PRAGMA busy_timeout=0")
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        else:
            cursor.execute(f"PRAGMA busy_timeout={int(sqlite_busy_timeout() * 1000)}")
        cursor.close()

    if inline:
        return  # its caller issues BEGIN IMMEDIATE itself, to learn whether the lock is free

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Reads (see ``reading``) take no write lock; WAL lets them run beside a writer.
        mode = "" if connection.get_execution_options().get(READ_ONLY) else " IMMEDIATE"
        # On the driver's cursor: SQLAlchemy's execution context for one BEGIN costs more
        # CPU than a whole ledger write (see runner.store.direct).
        execute_driver(connection, f"BEGIN{mode}")


def create_sync_twin(engine: AsyncEngine, *, inline: bool = False) -> Engine:
    """A synchronous engine on the same SQLite file as ``engine`` (same pragmas, same BEGIN
    IMMEDIATE), for a write done as one call in a worker thread (see
    :meth:`runner.store.database.Database.run_write`).

    With ``inline``, for writes done on the event loop itself: its connections never wait for
    a lock (``busy_timeout=0``), never checkpoint, and leave BEGIN to their caller.
    """
    url = engine.url.set(drivername="sqlite")
    timeout = 0.0 if inline else sqlite_busy_timeout()
    twin = create_sync_engine(
        url,
        connect_args={"timeout": timeout, "check_same_thread": False},
        poolclass=StaticPool,
    )
    _configure_sqlite(twin, inline=inline)
    return twin


@asynccontextmanager
async def reading(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for queries that only read (no write lock on SQLite)."""
    with translated(engine.url.render_as_string(hide_password=True)):
        async with engine.connect() as conn:
            await conn.execution_options(**{READ_ONLY: True})
            yield conn
