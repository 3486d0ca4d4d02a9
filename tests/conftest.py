"""Shared fixtures. Async tests run on asyncio through the anyio pytest plugin.

Databases:

- ``sqlite_url``: a fresh SQLite file under the test's ``tmp_path``.
- ``pg_url``: a fresh, empty PostgreSQL database, dropped after the test. The server is
  ``postgresql://postgres@127.0.0.1:5432/postgres`` unless ``IMAGERUN_TEST_PG`` names another
  (its database is the one we connect to for ``CREATE DATABASE``). Tests using it carry the
  ``postgres`` marker. With no server reachable they are skipped, unless ``CI`` is set: there a
  missing server is an error, so the PostgreSQL half of the suite cannot silently vanish.
- ``db_url``: each of the two in turn; ``store``: an opened, migrated ``Store`` on it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest
from sqlalchemy.engine import URL, make_url

from runner.store import Store

T = TypeVar("T")

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_CONNECT_TIMEOUT = 5.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "pg_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


def _off_loop(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on a private loop in a private thread.

    The PostgreSQL fixtures are synchronous so that sync tests (CLI runners, Alembic) can use
    them too; a thread keeps their loop clear of the one anyio runs the test on.
    """

    async def run() -> T:
        return await make()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, run()).result()


def _dsn(url: URL) -> str:
    """A libpq-style DSN for asyncpg (it does not know SQLAlchemy's driver suffix)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def _pg_server() -> URL:
    """The admin URL of a reachable PostgreSQL server, or skip (fail under CI)."""
    raw = os.environ.get("IMAGERUN_TEST_PG") or DEFAULT_PG
    server = make_url(raw)
    server = server.set(drivername="postgresql+asyncpg", database=server.database or "postgres")

    async def probe() -> None:
        conn = await asyncpg.connect(_dsn(server), timeout=PG_CONNECT_TIMEOUT)
        await conn.close()

    try:
        _off_loop(probe)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        where = server.render_as_string(hide_password=True)
        message = f"PostgreSQL not reachable at {where} ({type(exc).__name__}: {exc})"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI is set, so the PostgreSQL tests must run", pytrace=False)
        pytest.skip(f"{message}; start it or set IMAGERUN_TEST_PG")
    return server


@pytest.fixture
def pg_url(_pg_server: URL) -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database, dropped (forcibly) after the test."""
    name = f"imagerun_test_{secrets.token_hex(6)}"
    admin = _dsn(_pg_server)

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin, timeout=PG_CONNECT_TIMEOUT)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    _off_loop(lambda: run(f'CREATE DATABASE "{name}"'))
    try:
        yield _pg_server.set(database=name).render_as_string(hide_password=False)
    finally:
        # FORCE: a test that failed mid-way may leave connections behind.
        _off_loop(lambda: run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'imagerun.db'}"


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def db_url(request: pytest.FixtureRequest) -> str:
    """Each supported database in turn: a fresh SQLite file, then a fresh PostgreSQL db."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    """An opened, migrated store on ``db_url``; closed after the test."""
    opened = await Store.open(db_url)
    try:
        yield opened
    finally:
        await opened.close()
