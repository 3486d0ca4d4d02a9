"""Group commit for the worker's hot path: many jobs' ledger writes in one transaction.

Every job writes twice (a ``sending`` row before its request, the outcome after). Committed
one by one, those writes queue behind each other on SQLite's single writer and cap a run at a
few hundred jobs per second. :class:`LedgerWriter` offers the same verbs as the store, but a
background task commits whatever has accumulated in one transaction, as ``executemany``.

The contract is unchanged: a verb returns only after its write is committed, so a request
still never leaves before its ledger row exists. Callers wait shielded from cancellation, so a
stopping run never abandons a write that may already be committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from runner.models import JobState
from runner.store.engine import run_write
from runner.store.ledger import Finish, apply_finishes, apply_starts
from runner.store.records import AttemptResult, AttemptStart, OutputRecord

#: Most writes committed in one transaction (bounds a transaction's size and latency).
MAX_GROUP = 512


class Ledger(Protocol):
    """The ledger verbs a job runner needs; :class:`runner.store.Store` and
    :class:`LedgerWriter` both provide them (documented on ``runner.store.ledger.LedgerOps``).
    """

    async def start_attempt(self, start: AttemptStart) -> None: ...
    async def complete(self, result: AttemptResult, files: Sequence[OutputRecord]) -> None: ...
    async def retry_later(self, result: AttemptResult, at: datetime) -> None: ...
    async def fail(self, result: AttemptResult) -> None: ...
    async def release(self, result: AttemptResult | None, job_id: int, state: JobState) -> None: ...


@dataclass(slots=True, eq=False)
class _Pending:
    item: AttemptStart | Finish
    done: anyio.Event = field(default_factory=anyio.Event)
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


class LedgerWriter:
    """The ledger verbs of :class:`runner.store.Store`, committed in groups.

    Start :meth:`run` in the worker's task group before using the verbs.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._queue: list[_Pending] = []
        self._wake = anyio.Event()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Commit queued writes until cancelled (cancel only once no verb is waiting)."""
        task_status.started()
        while True:
            await self._wake.wait()
            # One more turn of the event loop lets every job that is ready to write join
            # this group: fewer, larger commits cost less CPU per job than prompt small ones.
            await anyio.lowlevel.checkpoint()
            self._wake = anyio.Event()
            while self._queue:
                group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
                with anyio.CancelScope(shield=True):
                    await self._commit(group)

    async def _commit(self, group: list[_Pending]) -> None:
        try:
            await run_write(self._engine, _apply, group)
        except Exception as exc:  # every caller in the group sees the store's failure
            for pending in group:
                pending.error = exc
        for pending in group:
            pending.done.set()

    async def _submit(self, item: AttemptStart | Finish) -> None:
        pending = _Pending(item)
        self._queue.append(pending)
        self._wake.set()
        try:
            await pending.done.wait()
        except anyio.get_cancelled_exc_class():
            # The write may be committed already: the caller hears about the cancellation
            # only once it is (a cancel scope per write would cost more than the write).
            with anyio.CancelScope(shield=True):
                await pending.done.wait()
            raise
        if pending.error is not None:
            raise pending.error

    async def start_attempt(self, start: AttemptStart) -> None:
        """See :meth:`runner.store.Store.start_attempt` (raises :class:`LeaseLost`)."""
        await self._submit(start)

    async def complete(self, result: AttemptResult, files: Sequence[OutputRecord]) -> None:
        await self._submit(
            Finish(job_id=result.job_id, state=JobState.SUCCEEDED, result=result, files=files)
        )

    async def retry_later(self, result: AttemptResult, at: datetime) -> None:
        await self._submit(
            Finish(job_id=result.job_id, state=JobState.WAITING, result=result, next_at=at)
        )

    async def fail(self, result: AttemptResult) -> None:
        await self._submit(Finish(job_id=result.job_id, state=JobState.FAILED, result=result))

    async def release(self, result: AttemptResult | None, job_id: int, state: JobState) -> None:
        await self._submit(Finish(job_id=job_id, state=state, result=result))
