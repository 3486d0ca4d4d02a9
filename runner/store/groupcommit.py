"""Group commit for the worker's hot path: many jobs' ledger writes in one transaction.

Every job writes twice (a ``sending`` row before its request, the outcome after). Committed
one by one, those writes queue behind each other on SQLite's single writer and cap a run at a
few hundred jobs per second. :class:`LedgerWriter` offers the same verbs as the store, but a
background task commits whatever has accumulated in one transaction, as ``executemany``.

``start_attempt`` returns only after its row is committed, so a request never leaves before
its ledger row exists. Its caller waits shielded from cancellation: a stopping run never
abandons a write that may already be committed, and always finishes the attempt it started.

The finishing verbs return once their write is queued: a lane moves on to its next job
without waiting a commit for the last one. A finish wakes the writer as a start does; a commit
first lets every write that is ready join it (see :meth:`LedgerWriter._gather`), so a finish
usually rides in the transaction of its lane's next start, and a job costs about one commit
instead of two. Until its commit is done a finish exists only in memory: a crash then leaves
the attempt ``sending``, exactly as a crash just before the write would (recovery judges it
``unknown`` and adopts its image on disk), so finishes are never held back waiting for a
start: the window is the commit under way plus the finish's own. :meth:`LedgerWriter.flush`
waits for every queued write, and :meth:`LedgerWriter.run` commits what is queued before it
exits; a write that comes later is committed by its caller.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus
from sqlalchemy import Connection

from runner.errors import StoreUnavailable
from runner.store.database import Database
from runner.store.ledger import Finish, FinishVerbs, apply_finishes, apply_starts, unapplied
from runner.store.records import AttemptStart

#: Most writes committed in one transaction (bounds a transaction's size and latency).
MAX_GROUP = 512
#: Most turns of the event loop a commit waits for more writes to join it.
GATHER_TURNS = 8


@dataclass(slots=True, eq=False)
class _Pending:
    item: AttemptStart | Finish
    #: Set once committed (only for the writes a caller waits for).
    done: anyio.Event | None = None
    error: BaseException | None = None
    #: A commit of it was tried: a failure during COMMIT leaves it unknown whether it took.
    tried: bool = False


def _apply(conn: Connection, group: list[_Pending], replay: bool) -> None:
    if replay:  # what an earlier, failed-looking commit did write is not written twice
        group = unapplied(conn, group, key=lambda p: p.item)
    starts = [(p, p.item) for p in group if isinstance(p.item, AttemptStart)]
    finishes = [p.item for p in group if isinstance(p.item, Finish)]
    if starts:
        verdicts = apply_starts(conn, [item for _, item in starts])
        for (pending, _), verdict in zip(starts, verdicts, strict=True):
            pending.error = verdict
    if finishes:
        apply_finishes(conn, finishes)


class LedgerWriter(FinishVerbs):
    """A :class:`runner.abc.GroupLedger` on one database."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._queue: list[_Pending] = []
        #: Set when anything is queued.
        self._due = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()
        #: The first failed commit of a write nobody waited for; raised by every later verb.
        self._failure: BaseException | None = None
        #: Finishing writes an outage kept from committing past the database's outage limit:
        #: they wait here, in memory, and go first in the next commit.
        self._stranded: list[_Pending] = []
        #: The outage that stranded them (raised by :meth:`flush` while any are left).
        self._outage: StoreUnavailable | None = None
        #: Set once :meth:`run` has ended: later writes are committed by their callers.
        self._closed = False

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                await self._due.wait()
                await self._gather()
                self._due = anyio.Event()
                await self._commit_queued()
        finally:
            await self._commit_queued()
            self._closed = True

    async def _gather(self) -> None:
        """Let every job that is ready to write join this group: turns of the event loop until
        one brings no new write (at most ``GATHER_TURNS``). Fewer, larger commits cost less
        CPU per job than prompt small ones, and a turn in which nothing else runs is cheap."""
        for _ in range(GATHER_TURNS):
            queued = len(self._queue)
            await anyio.lowlevel.checkpoint()
            if len(self._queue) == queued:
                return

    async def flush(self) -> None:
        if self._stranded and not self._closed and not self._db.gone:
            self._wake_writer()  # try them once more
        if not self._idle.is_set():
            with anyio.CancelScope(shield=True):
                await self._idle.wait()
        if self._failure is not None:
            raise self._failure
        if self._stranded and self._outage is not None:
            raise self._outage

    @property
    def unrecorded(self) -> int:
        """Finished attempts whose outcome an outage has kept from the database so far."""
        return len(self._stranded)

    async def _commit_queued(self) -> None:
        with anyio.CancelScope(shield=True):
            self._queue[:0], self._stranded = self._stranded, []
            while self._queue:
                group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
                await self._commit(group)
            self._idle.set()

    async def _commit(self, group: list[_Pending]) -> None:
        async def write() -> None:
            replay = any(p.tried for p in group)
            for pending in group:
                pending.tried = True
            # A lone start is one statement on PostgreSQL (see ``apply_starts``).
            alone = len(group) == 1 and isinstance(group[0].item, AttemptStart)
            await self._db.run_write_kept(_apply, group, replay, autocommit=alone)

        try:
            await self._db.retrying(write)  # waits out an outage up to the database's limit
        except StoreUnavailable as exc:
            # Past the limit: no start goes ahead (its request must not leave unrecorded), and
            # finished attempts stay in memory for a later commit.
            self._outage = exc
            for pending in group:
                if isinstance(pending.item, Finish):
                    self._stranded.append(pending)
                else:
                    pending.error = exc
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
        self._wake_writer()
        return pending

    def _wake_writer(self) -> None:
        if self._idle.is_set():
            self._idle = anyio.Event()
        self._due.set()

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
        await self._submit(start)
