"""One database: the async engine and, on SQLite, the writer lock, sync twin and writer thread.

Every verb of the store reaches the database through a :class:`Database`; nothing about a
connection lives in module globals, so two stores on two files never share a lock or a thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeVar

import anyio
from sqlalchemy import Connection, Engine

from runner.errors import StoreUnavailable
from runner.store.engine import create_engine, create_sync_twin, normalise_url, reading
from runner.store.outage import OutagePolicy, translated

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

P = ParamSpec("P")
T = TypeVar("T")


class Database:
    """The connection side of the store: how to read, how to write, and when to close.

    Every failure that says the database is away for now is raised as
    :class:`runner.errors.StoreUnavailable`; :meth:`retrying` waits such failures out.

    Args:
        url: a database URL (plain ``sqlite:///`` and ``postgresql://`` are accepted and mapped
            to the async drivers).
        policy: how long and how an outage is waited out (default: from the environment).
    """

    def __init__(self, url: str, *, policy: OutagePolicy | None = None) -> None:
        self.url = normalise_url(url)
        self.engine: AsyncEngine = create_engine(self.url)
        self.dialect: str = self.engine.dialect.name
        self.policy = policy or OutagePolicy.from_environ()
        #: The outage that ran past the policy's limit, once one has: from then on every
        #: call through :meth:`retrying` fails at once with it (the command is stopping, and
        #: must not wait out a busy timeout, let alone the limit, at each of its steps).
        self._gone: StoreUnavailable | None = None
        # SQLite has one writer at a time; writers of this process take turns here (see
        # ``writing``). Unused on PostgreSQL. Free, it is taken without a turn of the event
        # loop: every ledger commit takes it, and a turn each is latency on every request.
        self._write_lock = anyio.Lock(fast_acquire=True)
        self._twin: Engine | None = None
        self._twin_conn: Connection | None = None
        self._writer: ThreadPoolExecutor | None = None

    @property
    def safe_url(self) -> str:
        """The URL with any password masked, for messages."""
        return self.engine.url.render_as_string(hide_password=True)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        """A connection for queries that only read (no write lock on SQLite)."""
        async with reading(self.engine) as conn:
            yield conn

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A connection whose every statement commits by itself (no BEGIN … COMMIT)."""
        with translated(self.safe_url):
            async with self.engine.connect() as conn:
                yield await conn.execution_options(isolation_level="AUTOCOMMIT")

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction, committed on exit (rolled back on error).

        On SQLite, writers of this process take turns on an in-process lock first. SQLite has
        one writer at a time anyway, and a connection that finds the file locked waits in
        sqlite's busy handler, which sleeps in steps of milliseconds: queueing here instead
        keeps many concurrent jobs from turning every commit into a sleep. Other processes
        still meet at BEGIN IMMEDIATE.
        """
        with translated(self.safe_url):
            if self.dialect != "sqlite":
                async with self.engine.begin() as conn:
                    yield conn
                return
            async with self._write_lock, self.engine.begin() as conn:
                yield conn

    async def run_write(
        self,
        fn: Callable[Concatenate[Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run ``fn(conn, ...)`` as one write transaction, committed before returning.

        On SQLite the whole function runs in one hop to the writer thread, on a synchronous
        engine over the same file (same pragmas, same BEGIN IMMEDIATE): aiosqlite hops to its
        thread and back for every statement, and a transaction of a few statements then costs
        milliseconds on a busy event loop. On PostgreSQL it runs on the async connection via
        ``run_sync``. Hot-path verbs (claim, ledger writes) use this; the rest use
        :meth:`writing`.
        """
        if self.dialect != "sqlite":
            with translated(self.safe_url):
                async with self.engine.begin() as conn:
                    return await conn.run_sync(fn, *args, **kwargs)

        def in_thread() -> T:
            conn = self._writer_connection()
            with conn.begin():
                return fn(conn, *args, **kwargs)

        with translated(self.safe_url):
            async with self._write_lock:
                done = asyncio.wrap_future(self._writer_thread().submit(in_thread))
                with anyio.CancelScope(shield=True):  # a started transaction is seen through
                    result = await done
        return result

    async def retrying(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """``await fn(...)``, run again while it raises :class:`StoreUnavailable`.

        Backoff and limit come from :attr:`policy`; past the limit the error is raised, and
        so is it at once by every later call (see :attr:`gone`).
        """
        if self._gone is not None:
            raise StoreUnavailable(str(self._gone)) from self._gone
        try:
            # The first try goes without the retry machinery (50 µs a call, on the hot path).
            return await fn(*args, **kwargs)
        except StoreUnavailable:
            pass
        try:
            async for attempt in self.policy.attempts():
                with attempt:
                    return await fn(*args, **kwargs)
        except StoreUnavailable as exc:
            self._gone = StoreUnavailable(
                f"{exc} (still after {self.policy.timeout:g} s of trying). Images already "
                "written are on disk; once the database is back, run the command again: "
                "`imagerun run` records what a stopped run left on disk and carries on."
            )
            raise self._gone from exc
        raise AssertionError("stamina ended its attempts without an outcome")

    @property
    def gone(self) -> bool:
        """Whether an outage outlasted the policy's limit (this command is to stop)."""
        return self._gone is not None

    def _writer_connection(self) -> Connection:
        """The writer thread's connection to the twin (called in that thread only).

        Kept open for the life of the database: a checkout and check-in per write, with the
        pool's reset on return, cost more CPU than the ledger's statements themselves.
        """
        if self._twin is None:
            self._twin = create_sync_twin(self.engine)
        if self._twin_conn is None:
            self._twin_conn = self._twin.connect()
        return self._twin_conn

    def _writer_thread(self) -> ThreadPoolExecutor:
        # One thread is cheaper than anyio's pool for many short hops, and the writes are
        # serialised by the write lock anyway.
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, "imagerun-sqlite-writer")
        return self._writer

    async def close(self) -> None:
        """Wait for the writer thread, then close every connection."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            if self._twin_conn is not None:
                conn, self._twin_conn = self._twin_conn, None
                await asyncio.wrap_future(writer.submit(conn.close))
            await anyio.to_thread.run_sync(writer.shutdown)
        if self._twin is not None:
            twin, self._twin = self._twin, None
            twin.dispose()
        await self.engine.dispose()
