"""One database: the async engine and, on SQLite, the writer lock, sync twins and writer thread.

Every verb of the store reaches the database through a :class:`Database`; nothing about a
connection lives in module globals, so two stores on two files never share a lock or a thread.
"""

from __future__ import annotations

import asyncio
import enum
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeVar

import anyio
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from runner.errors import StoreUnavailable
from runner.store.direct import execute_driver
from runner.store.engine import create_engine, create_sync_twin, normalise_url, reading
from runner.store.outage import OutagePolicy, translated

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

P = ParamSpec("P")
T = TypeVar("T")

#: Write transactions on the event loop between two checkpoints of the WAL (done by the
#: writer thread). SQLite's own default is one per 1,000 WAL pages; a ledger commit writes
#: a dozen or so.
CHECKPOINT_EVERY = 64
#: Seconds a write may hold the event loop: one that took longer (a claim of thousands of
#: jobs, a budget summed over a big batch, a full group commit) is done in the writer thread
#: from then on, until it takes under half of this there.
INLINE_BUDGET_S = 0.005


class _Busy(enum.Enum):
    """The write lock of the file was held by another connection: nothing was written."""

    BUSY = "busy"


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
        #: The URL with any password masked, for messages (rendered once: every commit's
        #: error mapping names it).
        self.safe_url: str = self.engine.url.render_as_string(hide_password=True)
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
        #: The event loop's own connection for writes (see ``_write_inline``); ``False`` once
        #: the file turned out not to be in WAL mode (then every write goes to the thread).
        self._inline: Engine | None = None
        self._inline_conn: Connection | bool | None = None
        self._inline_commits = 0
        #: Write functions too slow for the event loop (see ``INLINE_BUDGET_S``).
        self._off_loop: set[Callable[..., object]] = set()
        #: PostgreSQL: the connection :meth:`run_write_kept` keeps, and its turns.
        self._kept: AsyncConnection | None = None
        self._kept_lock = anyio.Lock(fast_acquire=True)

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

        On SQLite the whole function runs on a synchronous engine over the same file (same
        pragmas, same BEGIN IMMEDIATE), in one call: aiosqlite hops to its thread and back
        for every statement, and a transaction of a few statements then costs milliseconds
        on a busy event loop. It runs on the event loop itself when the file's write lock is
        free at once (see ``_write_inline``), else in one hop to the writer thread, which
        waits for the lock there; a function whose last write held the loop longer than
        ``INLINE_BUDGET_S`` runs in the thread until it is quick again. On PostgreSQL it
        runs on the async connection via ``run_sync``. Hot-path verbs (claim, ledger
        writes) use this; the rest use :meth:`writing`.
        """
        if self.dialect != "sqlite":
            with translated(self.safe_url):
                async with self.engine.begin() as conn:
                    return await conn.run_sync(fn, *args, **kwargs)

        def in_thread() -> T:
            conn = self._writer_connection()
            started = time.perf_counter()
            with conn.begin():
                result = fn(conn, *args, **kwargs)
            if time.perf_counter() - started < INLINE_BUDGET_S / 2:
                self._off_loop.discard(fn)  # quick again: back on the event loop
            return result

        with translated(self.safe_url):
            async with self._write_lock:
                if fn in self._off_loop:
                    return await self._in_writer_thread(in_thread)
                started = time.perf_counter()
                written = self._write_inline(fn, *args, **kwargs)
                if written is _Busy.BUSY:
                    return await self._in_writer_thread(in_thread)
                if time.perf_counter() - started > INLINE_BUDGET_S:
                    # It held every request in flight and every timer of this process that
                    # long: the next ones go to the thread, whose SQLite calls let go of the GIL.
                    self._off_loop.add(fn)
                if self._inline_commits % CHECKPOINT_EVERY == 0:
                    # Under the write lock, as SQLite's own checkpoint runs inside a commit:
                    # with writes appended meanwhile, a checkpoint never catches up, and the
                    # WAL is only started over once one has.
                    await self._in_writer_thread(self._checkpoint)
        return written

    async def run_write_kept(
        self, fn: Callable[..., T], *args: object, autocommit: bool = False
    ) -> T:
        """:meth:`run_write` on a connection kept between calls, for a caller that writes
        often and one transaction at a time (the group ledger, whose commits every request
        waits for). With ``autocommit``, each statement of ``fn`` commits by itself (for a
        write that is one statement, and reads before it): on PostgreSQL no BEGIN and COMMIT
        go with it.

        On PostgreSQL a pooled connection is checked out and pinged (BEGIN, an empty query,
        ROLLBACK: three round trips) before each transaction, and BEGIN and COMMIT are two
        more: most of a start row's wait, and more of its spread on a busy machine, where
        every round trip waits for the server's process to be scheduled. The kept connection
        is discarded on any failure (a restart, a dropped link) and the next call checks out
        a fresh one, pinged. On SQLite this is :meth:`run_write`, whose connections are kept
        already.
        """
        if self.dialect == "sqlite":
            return await self.run_write(fn, *args)
        with translated(self.safe_url):
            async with self._kept_lock:
                if self._kept is None:
                    self._kept = await self.engine.connect()
                conn = self._kept
                try:
                    level = "AUTOCOMMIT" if autocommit else conn.default_isolation_level
                    await conn.execution_options(isolation_level=level)
                    async with conn.begin():  # under AUTOCOMMIT, nothing goes to the server
                        return await conn.run_sync(fn, *args)
                except BaseException:
                    self._kept = None
                    with anyio.CancelScope(shield=True):
                        await _discard(conn)
                    raise

    async def _in_writer_thread(self, fn: Callable[[], T]) -> T:
        done = asyncio.wrap_future(self._writer_thread().submit(fn))
        with anyio.CancelScope(shield=True):  # a started transaction is seen through
            result = await done
        return result  # noqa: RET504 (a cancel scope may swallow what it exits with)

    def _write_inline(
        self,
        fn: Callable[Concatenate[Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T | _Busy:
        """``fn(conn, ...)`` as one write transaction on the event loop's own connection, or
        ``_Busy.BUSY`` (nothing written) when the write lock is not free at once.

        A ledger commit on a WAL file is a few statements and an append to the WAL, without
        an fsync (``synchronous=NORMAL``): less time than handing it to a thread, and the
        hand-off also had the two threads trade the GIL at each statement while the event
        loop had requests to serve. What could block stays off the loop: this connection
        never waits for a lock another process holds (``busy_timeout=0``; the writer thread,
        which does wait, takes the write then) and never checkpoints (the writer thread does,
        every ``CHECKPOINT_EVERY`` commits, while in-process writers wait for it as they would
        for SQLite's own). Not used unless the file is in WAL mode.
        """
        conn = self._inline_connection()
        if conn is None:
            return _Busy.BUSY
        try:
            execute_driver(conn, "BEGIN IMMEDIATE")
        except OperationalError as exc:
            code = getattr(exc.orig, "sqlite_errorcode", None)  # the extended result code
            if isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_BUSY:
                return _Busy.BUSY
            raise
        raw = conn.connection.dbapi_connection
        try:
            with conn.begin():  # commits (or rolls back) the transaction begun above
                result = fn(conn, *args, **kwargs)
        except BaseException:
            if raw is not None and raw.in_transaction:
                raw.rollback()
            raise
        self._inline_commits += 1
        return result

    def _inline_connection(self) -> Connection | None:
        """The event loop's write connection, or ``None`` where the file is not in WAL mode."""
        if isinstance(self._inline_conn, Connection):
            return self._inline_conn
        if self._inline_conn is False:
            return None
        if self._inline is None:
            self._inline = create_sync_twin(self.engine, inline=True)
        conn = self._inline.connect()
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        conn.rollback()  # the PRAGMA began SQLAlchemy's transaction; BEGIN is ours to issue
        if str(mode).lower() != "wal":
            conn.close()
            self._inline_conn = False
            return None
        self._inline_conn = conn
        return conn

    def _checkpoint(self) -> None:
        """Copy what the WAL holds into the database file (called in the writer thread).

        PASSIVE waits for no reader or writer; a checkpoint that fails is harmless (the WAL
        only grows until the next one).
        """
        with suppress(DBAPIError):
            execute_driver(self._writer_connection(), "PRAGMA wal_checkpoint(PASSIVE)")

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
        async with self._kept_lock:  # after the write under way, if any
            if self._kept is not None:
                kept, self._kept = self._kept, None
                with suppress(Exception):
                    await kept.close()
        if isinstance(self._inline_conn, Connection):
            await anyio.to_thread.run_sync(self._inline_conn.close)
        self._inline_conn = None
        if self._inline is not None:
            inline, self._inline = self._inline, None
            inline.dispose()
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


async def _discard(conn: AsyncConnection) -> None:
    """Give up a connection a write failed on: discarded, not returned to the pool (its
    link may be gone, or left in a state nobody should inherit)."""
    with suppress(Exception):
        await conn.invalidate()
    with suppress(Exception):
        await conn.close()
