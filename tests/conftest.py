"""Shared fixtures. Async tests run on asyncio through the anyio pytest plugin.

Databases:

- ``sqlite_url``: a fresh SQLite file under the test's ``tmp_path``.
- ``pg_url``: a fresh, empty PostgreSQL database, dropped after the test. The server is
  ``postgresql://postgres@127.0.0.1:5432/postgres`` unless ``IMAGERUN_TEST_PG`` names another
  (its database is the one we connect to for ``CREATE DATABASE``). Tests using it carry the
  ``postgres`` marker. With no server reachable they are skipped, unless ``CI`` is set: there a
  missing server is an error, so the PostgreSQL half of the suite cannot silently vanish.
- ``db_url``: each of the two in turn; ``store``: an opened, migrated ``Store`` on it.

A ``store`` is not migrated test by test (creating, migrating and dropping a PostgreSQL
database costs seconds on a loaded machine): each test process migrates one SQLite file, which
every test copies, and one PostgreSQL database, which tests take in turn and which is emptied
after each (every connection to it ended, every table truncated, identities restarted; should a
test have changed its schema, it is replaced by a new migrated one). ``db_url`` is then the
store's database; without ``store`` it is a new empty one.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest
from sqlalchemy.engine import URL, make_url

from runner.store import Store
from runner.store.migrate import head_revision
from tests.store.outages import RESTART_LOCK, PostgresServer, PrivatePostgres, safety_net

T = TypeVar("T")

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_CONNECT_TIMEOUT = 5.0
#: Seconds (one try each) the probe waits for a free connection slot.
PG_BUSY_RETRIES = 30


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
        # Other test processes on the machine may have every connection slot for a moment.
        for _ in range(PG_BUSY_RETRIES):
            try:
                conn = await asyncpg.connect(_dsn(server), timeout=PG_CONNECT_TIMEOUT)
            except asyncpg.TooManyConnectionsError:
                await asyncio.sleep(1.0)
            else:
                await conn.close()
                return
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


def _pg_execute(server: URL, sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(_dsn(server), timeout=PG_CONNECT_TIMEOUT)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    _off_loop(run)


def _migrate(url: str) -> None:
    async def run() -> None:
        store = await Store.open(url)
        await store.close()

    _off_loop(run)


@contextmanager
def _pg_database(server: URL) -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped (forcibly) after."""
    name = f"imagerun_test_{secrets.token_hex(6)}"
    _pg_execute(server, f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        # FORCE: a test that failed mid-way may leave connections behind.
        _pg_execute(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def _server_kept_up(request: pytest.FixtureRequest) -> Iterator[None]:
    """Hold the restart lock shared for the test: a test that stops the server (in this
    session or another on the machine) takes it exclusively, so it waits for the PostgreSQL
    tests running, and they wait for its outage. The outage tests themselves do not take it."""
    if request.node.get_closest_marker("db_faults"):
        yield
        return
    with RESTART_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        yield


@pytest.fixture
def pg_url(_pg_server: URL, request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database, dropped (forcibly) after the test."""
    with _server_kept_up(request), _pg_database(_pg_server) as url:
        yield url


class _ReusedDatabase:
    """One migrated PostgreSQL database, handed to one test at a time and emptied after each."""

    def __init__(self, server: URL) -> None:
        self.server = server
        self.stack = ExitStack()
        self.url = ""
        self.tables: set[str] = set()
        self.replace()

    def replace(self) -> None:
        self.stack.close()
        self.url = self.stack.enter_context(_pg_database(self.server))
        _migrate(self.url)
        self.tables = _off_loop(self._tables)

    async def _tables(self) -> set[str]:
        conn = await asyncpg.connect(_dsn(make_url(self.url)), timeout=PG_CONNECT_TIMEOUT)
        try:
            rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            return {row["tablename"] for row in rows}
        finally:
            await conn.close()

    def reset(self) -> None:
        """Empty it for the next test, or replace it if the schema is no longer the head's."""
        name = make_url(self.url).database
        _pg_execute(
            self.server,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}' AND pid <> pg_backend_pid()",
        )
        if not _off_loop(self._empty):
            self.replace()

    async def _empty(self) -> bool:
        conn = await asyncpg.connect(_dsn(make_url(self.url)), timeout=PG_CONNECT_TIMEOUT)
        try:
            rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            version = await conn.fetchval("SELECT version_num FROM alembic_version")
            if {row["tablename"] for row in rows} == self.tables and version == head_revision():
                data = sorted(self.tables - {"alembic_version"})
                names = ", ".join(f'"{t}"' for t in data)
                await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
                return True
            return False
        except asyncpg.PostgresError:
            return False
        finally:
            await conn.close()


@pytest.fixture(scope="session")
def _pg_reused(_pg_server: URL) -> Iterator[_ReusedDatabase]:
    database = _ReusedDatabase(_pg_server)
    try:
        yield database
    finally:
        database.stack.close()


@pytest.fixture
def migrated_pg_url(_pg_reused: _ReusedDatabase, request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of an empty PostgreSQL database at the head revision, this test's alone."""
    with _server_kept_up(request):
        try:
            yield _pg_reused.url
        finally:
            _pg_reused.reset()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'imagerun.db'}"


@pytest.fixture(scope="session")
def _sqlite_migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("migrated") / "imagerun.db"
    _migrate(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture
def migrated_sqlite_url(tmp_path: Path, _sqlite_migrated_template: Path) -> str:
    """URL of a fresh SQLite file at the head revision (a copy of a migrated one)."""
    path = tmp_path / "imagerun.db"
    shutil.copyfile(_sqlite_migrated_template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def db_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def db_url(db_kind: str, request: pytest.FixtureRequest) -> str:
    """Each supported database in turn: a fresh SQLite file, then a fresh PostgreSQL db.

    Empty, unless the test also has a ``store``: then it is the store's migrated database.
    """
    migrated = "store" in request.fixturenames
    fixture = {"sqlite": "sqlite_url", "postgres": "pg_url"}[db_kind]
    url: str = request.getfixturevalue(f"migrated_{fixture}" if migrated else fixture)
    return url


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    """An opened store on ``db_url`` (at the head revision); closed after the test."""
    opened = await Store.open(db_url)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """The suite's PostgreSQL server, for tests that stop it: running again at the end of the
    session whatever happens."""
    server = PostgresServer.local()
    if server is None:
        pytest.skip("needs the local PostgreSQL cluster and the right to restart it (root)")
    safety_net(server)
    try:
        yield server
    finally:
        server.start()


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of the test's own, to leave down past the outage limit."""
    if PostgresServer.local() is None:
        pytest.skip("needs PostgreSQL's binaries and root (to run them as postgres)")
    root = Path(tempfile.mkdtemp(prefix="imagerun-pg-"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = PrivatePostgres.create(root, port)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
