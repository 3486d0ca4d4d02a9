"""Feeding a lane: a feeder claims jobs into a memory stream, consumers take and run them.

Per synchronous route::

    feeder        claim → memory stream (bounded by the route's concurrency)
    consumers     concurrency × JobRunner.run_job
    on the stop   jobs claimed but not started go back to the queue
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from runner.abc import GroupLedger
from runner.errors import StoreUnavailable
from runner.models import Job
from runner.run.attempt import JobRunner
from runner.run.lane import Lane
from runner.run.stats import RunStats
from runner.run.stores import RunStore

#: How long an idle feeder waits before looking for due retries again.
IDLE_POLL = 0.5
#: Jobs a lane keeps leased ahead of its lanes' needs (at least twice its concurrency).
CLAIM_AHEAD = 64


class LaneFeed:
    """The claiming, buffering and handing back of one run's synchronous lanes."""

    def __init__(
        self,
        *,
        store: RunStore,
        jobs: JobRunner,
        ledger: GroupLedger,
        worker_id: str,
        lease_seconds: float,
        stats: RunStats,
        stopping: anyio.Event,
        store_lost: Callable[[StoreUnavailable], None],
    ) -> None:
        self.store = store
        self.jobs = jobs
        self.ledger = ledger
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.stats = stats
        self.stopping = stopping
        #: Called when the database stayed away past its outage limit.
        self.store_lost = store_lost
        #: Per route: jobs claimed into its memory stream that no consumer has taken yet.
        self.buffered: dict[str, set[int]] = {}

    def may_claim(self, lane: Lane) -> bool:
        """Whether ``lane`` may claim more: the run is not stopping, nor its route or budget."""
        return not (
            self.stopping.is_set() or lane.gate.stopped is not None or self.stats.budget_stop
        )

    async def feed(self, lane: Lane, send: MemoryObjectSendStream[Job]) -> None:
        """Claim jobs while there is room, until nothing is left or the run is stopping."""
        buffered = self.buffered[lane.route.name]
        async with send:
            while self.may_claim(lane):
                # Taken before looking, so a job that finishes while we look (and pokes the
                # lane) wakes us at once instead of after a whole IDLE_POLL.
                wake = lane.wake
                # Claim in batches, when half the buffer has drained: a claim is a write
                # transaction, and one per finished job would crowd out the ledger's commits.
                buffer = _claim_buffer(lane)
                room = buffer - len(lane.held)
                if len(lane.held) <= buffer // 2:
                    jobs = await self.store.claim(
                        worker_id=self.worker_id,
                        batch_ids=lane.batch_ids,
                        limit=room,
                        lease_seconds=self.lease_seconds,
                        cap=lane.route.max_in_flight,
                    )
                    lane.held.update(j.id for j in jobs)
                    buffered.update(j.id for j in jobs)
                    if self.stopping.is_set():  # the stop came while claiming
                        await self.release_buffered(lane)
                        break
                    for job in jobs:
                        await _put(send, job)
                    if jobs:
                        continue
                    if not lane.held:
                        # Jobs just finished look live until their writes are committed.
                        await self.ledger.flush()
                        if not await self.store.any_live(lane.batch_ids):
                            return
                with anyio.move_on_after(IDLE_POLL):
                    await wake.wait()

    async def consume(self, lane: Lane, receive: MemoryObjectReceiveStream[Job]) -> None:
        """Run the jobs the feeder buffered, one at a time, until the feeder is done."""
        buffered = self.buffered[lane.route.name]
        async with receive:
            while (job := await _take(receive)) is not None:
                if job.id not in buffered:
                    continue  # handed back on the stop
                buffered.discard(job.id)
                try:
                    if self.may_claim(lane):
                        await self.jobs.run_job(lane, job)
                    else:
                        await self.store.release_unstarted(self.worker_id, [job.id])
                except StoreUnavailable as exc:
                    self.store_lost(exc)
                except anyio.get_cancelled_exc_class():
                    with anyio.CancelScope(shield=True):
                        # Only jobs that never started an attempt go back; an attempt that may
                        # have left was already recorded as interrupted by the job runner.
                        await self.store.release_unstarted(self.worker_id, [job.id])
                    raise
                finally:
                    lane.held.discard(job.id)
                    lane.poke()

    async def release_on_stop(
        self, lanes: list[Lane], *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """On the stop, hand back every job claimed but not started, at once: consumers busy
        with requests in flight would otherwise take them only to release them one by one,
        and not at all if the grace runs out first."""
        task_status.started()
        await self.stopping.wait()
        for lane in lanes:
            try:
                await self.release_buffered(lane)
            except StoreUnavailable as exc:
                self.store_lost(exc)

    async def release_buffered(self, lane: Lane) -> None:
        """Hand back the jobs of ``lane`` claimed into its stream that no consumer took."""
        ids = self.buffered.get(lane.route.name, set())
        released = sorted(ids)
        ids.clear()  # a consumer that then receives one of them skips it
        lane.held.difference_update(released)
        await self.store.release_unstarted(self.worker_id, released)
        lane.poke()


def _claim_buffer(lane: Lane) -> int:
    """How many jobs ``lane`` holds leased at most (queued in memory and in flight).

    Leases held ahead cost nothing while this worker lives and go back to the queue when it
    dies, but a route-wide ``max_in_flight`` counts them: under one, only twice the lane's
    concurrency is held, so that other workers still get their share.
    """
    if lane.route.max_in_flight is not None:
        return 2 * lane.concurrency
    return max(2 * lane.concurrency, CLAIM_AHEAD)


# A stream's send and receive take a turn of the event loop even when they need not wait:
# two turns a job, on the hot path. These take one only when they wait.
async def _put(send: MemoryObjectSendStream[Job], job: Job) -> None:
    try:
        send.send_nowait(job)
    except anyio.WouldBlock:
        await send.send(job)


async def _take(receive: MemoryObjectReceiveStream[Job]) -> Job | None:
    """The next job, or ``None`` once the feeder is done."""
    try:
        try:
            return receive.receive_nowait()
        except anyio.WouldBlock:
            return await receive.receive()
    except anyio.EndOfStream:
        return None
