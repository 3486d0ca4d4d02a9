"""Group commit for the worker's hot path: many jobs' ledger writes in one transaction.

Every job writes twice (a ``sending`` row before its request, the outcome after). Committed
one by one, those writes queue behind each other on SQLite's single writer and cap a run at a
few hundred jobs per second. :class:`LedgerWriter` offers the same verbs as the store, but a
background task commits whatever has accumulated in one transaction, as ``executemany``.

``start_attempt`` returns only after its row is committed, so a request never leaves before
its ledger row exists. Its caller waits shielded from cancellation: a stopping run never
abandons a write that may already be committed, and always finishes the attempt it started.

The finishing verbs return once their write is queued: it rides in the same transaction as
other lanes' next starts, which halves the commits per job, and a lane moves on to its next
job without waiting a commit for the last one. A crash in that window leaves the attempt
``sending``, exactly as a crash just before the write would (recovery judges it; its image on
disk is adopted). :meth:`LedgerWriter.flush` waits for every queued write, and
:meth:`LedgerWriter.run` commits what is queued before it exits; a write that comes later is
committed by its caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from runner.models import JobState
from runner.store.engine import run_write
from runner.store.ledger import Finish, FinishVerbs, apply_finishes, apply_starts
from runner.store.records import AttemptResult, AttemptStart, OutputRecord

#: Most writes committed in one transaction (bounds a transaction's size and latency).
MAX_GROUP = 512


class Ledger(Protocol):
    """The ledger verbs a job runner needs; :class:`runner.store.Store` and
    :class:`LedgerWriter` both provide them (documented on ``runner.store.ledger.LedgerOps``).
    """

    async def start_attempt(self, start: AttemptStart) -> None: ...
    async def flush(self) -> None: ...
    async def complete(self, result: AttemptResult, files: Sequence[OutputRecord]) -> None: ...
    async def retry_later(self, result: AttemptResult, at: datetime) -> None: ...
    async def fail(self, result: AttemptResult) -> None: ...
    async def release(self, result: AttemptResult | None, job_id: int, state: JobState) -> None: ...


@dataclass(slots=True, eq=False)
class _Pending:
    item: AttemptStart | Finish
    #: Set once committed (only for the writes a caller waits for).
    done: anyio.Event | None = None
    error: BaseException | None = None


def _apply(conn: Connection, group: list[_Pending]) -> None:
    starts = [(p, p.item) for p in group if isinstance(p.item, AttemptStart)]
    finishes = [p.item for p in group if isinstance(p.item, Finish)]
    if starts:
        verdicts = apply_starts(conn, [item for _, item in starts])
        for (pending, _), verdict in zip(starts, verdicts, strict=True):
            pending.error = verdict
    if finishes:
        apply_finishes(conn, finishes)


class LedgerWriter(FinishVerbs):
    """The ledger verbs of :class:`runner.store.Store`, committed in groups.

    Start :meth:`run` in the worker's task group before using the verbs.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._queue: list[_Pending] = []
        self._wake = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()
        #: The first failed commit of a write nobody waited for; raised by every later verb.
        self._failure: BaseException | None = None
        #: Set once :meth:`run` has ended: later writes are committed by their callers.
        self._closed = False

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Commit queued writes until cancelled; what is queued then is committed first."""
        task_status.started()
        try:
            while True:
                await self._wake.wait()
                # One more turn of the event loop lets every job that is ready to write join
                # this group: fewer, larger commits cost less CPU per job than prompt small ones.
                await anyio.lowlevel.checkpoint()
                self._wake = anyio.Event()
                await self._commit_queued()
        finally:
            await self._commit_queued()
            self._closed = True

    async def flush(self) -> None:
        """Wait until every write queued so far is committed (raises a failed one's error)."""
        if not self._idle.is_set():
            with anyio.CancelScope(shield=True):
                await self._idle.wait()
        if self._failure is not None:
            raise self._failure

    async def _commit_queued(self) -> None:
        with anyio.CancelScope(shield=True):
            while self._queue:
                group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
                await self._commit(group)
            self._idle.set()

    async def _commit(self, group: list[_Pending]) -> None:
        try:
            await run_write(self._engine, _apply, group)
        except Exception as exc:  # every caller in the group sees the store's failure
            for pending in group:
                pending.error = exc
            self._failure = self._failure or exc
        for pending in group:
            if pending.done is not None:
                pending.done.set()

    def _enqueue(self, item: AttemptStart | Finish, done: anyio.Event | None) -> _Pending:
        if self._failure is not None:
            raise self._failure
        pending = _Pending(item, done)
        if self._closed:
            return pending  # committed by the caller
        self._queue.append(pending)
        if self._idle.is_set():
            self._idle = anyio.Event()
        self._wake.set()
        return pending

    async def _submit(self, item: AttemptStart) -> None:
        pending = self._enqueue(item, anyio.Event())
        assert pending.done is not None
        # Shielded: once the row may be committed, the caller must hear how it went (and
        # finish the attempt), not be cancelled out of it with a `sending` row left behind.
        with anyio.CancelScope(shield=True):
            if self._closed:
                await self._commit([pending])
            else:
                await pending.done.wait()
        if pending.error is not None:
            raise pending.error

    async def _finish(self, item: Finish) -> None:
        # The finishing verbs (FinishVerbs) queue their write and return: see the module doc.
        pending = self._enqueue(item, None)
        if self._closed:  # the writer has stopped: commit here, and now
            with anyio.CancelScope(shield=True):
                await self._commit([pending])
            if pending.error is not None:
                raise pending.error

    async def start_attempt(self, start: AttemptStart) -> None:
        """See :meth:`runner.store.Store.start_attempt` (raises :class:`LeaseLost`)."""
        await self._submit(start)
