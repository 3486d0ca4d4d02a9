"""The remote lane of a run: runnable jobs gathered into remote batches, each driven to its end.

The driver claims runnable jobs for ``batch_max_wait`` seconds (at most a remote batch's
worth), builds each one's line, splits them into groups that fit one remote batch
(:mod:`runner.remote.gather`), and opens each group: the remote batch's row and a ``sending``
attempt row per line commit in one transaction before anything leaves. Each remote batch is
then driven by :class:`runner.remote.lifecycle.Lifecycle`. Every few seconds it also takes up
the unfinished remote batches of its batches whose driver is gone (a process that was killed).
With ``--fallback``, jobs whose last line failed in a retryable way go to that synchronous
route instead.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import anyio
from anyio.abc import TaskGroup

from runner.errors import AttemptError, StoreUnavailable
from runner.models import Job, Outcome, RemoteStep, utcnow
from runner.remote.client import RemoteClient
from runner.remote.context import DriverStore, RemoteContext
from runner.remote.gather import Sized, gather
from runner.remote.lifecycle import Lifecycle
from runner.remote.lines import PlannedLine, endpoint_url
from runner.run.attempt import JobRunner
from runner.run.lane import Lane
from runner.run.records import new_request_id
from runner.run.stats import RunStats
from runner.store import AttemptStart, RemoteBatch

#: How long an idle driver waits before looking for runnable jobs again.
IDLE_POLL = 0.5
#: How often a driver looks for remote batches whose driver died.
RESUME_EVERY = 10.0
#: Jobs claimed per claim while gathering (a claim's statement binds one variable per job).
CLAIM_CHUNK = 5000


class RemoteDriver:
    """Runs one ``batch``-shape lane (see the module docstring).

    Args:
        ctx: the lane, store and clients.
        lease_seconds: how long claimed jobs stay leased while they are gathered.
        may_claim: whether the run still takes new work.
    """

    def __init__(
        self,
        ctx: RemoteContext,
        *,
        lease_seconds: float,
        may_claim: Callable[[], bool],
        fallback: Lane | None = None,
    ) -> None:
        self.ctx = ctx
        self.route = ctx.lane.route
        self.lease_seconds = lease_seconds
        self.may_claim = may_claim
        self.fallback = fallback
        self._driving: set[str] = set()
        self._lifecycle = Lifecycle(ctx, lease_seconds=lease_seconds)
        self._synchronous = anyio.CapacityLimiter(fallback.concurrency if fallback else 1)

    async def run(self) -> None:
        """Gather and drive until nothing is runnable and no remote batch of ours is live."""
        ctx = self.ctx
        # A remote batch route has no request pace: the progress line shows its remote batches.
        ctx.stats.gates.pop(self.route.name, None)
        try:
            async with anyio.create_task_group() as group:
                resume_at = 0.0
                while not ctx.stopping.is_set():
                    if anyio.current_time() >= resume_at:
                        await self._resume(group)
                        resume_at = anyio.current_time() + RESUME_EVERY
                    if not self.may_claim():
                        break
                    if await self._gather(group):
                        continue
                    if not self._driving and not await ctx.store.any_live(ctx.lane.batch_ids):
                        break
                    with anyio.move_on_after(IDLE_POLL):
                        await ctx.stopping.wait()
        finally:
            await self._release_held()

    async def _drive(self, rb: RemoteBatch, resumed: bool) -> None:
        try:
            await self._lifecycle.drive(rb, resumed)
        finally:
            self._driving.discard(rb.id)

    async def _release_held(self) -> None:
        """Hand back the jobs claimed but in no remote batch (shielded: the lane is ending).

        Past the database's outage limit this fails too; the error that ended the lane is the
        one raised, not this. The jobs then stay leased to this worker: they go back to the
        queue once its lease runs out, or when the next run on this host finds it gone.
        """
        held = sorted(self.ctx.lane.held)
        self.ctx.lane.held.clear()
        with anyio.CancelScope(shield=True), contextlib.suppress(StoreUnavailable):
            await self.ctx.store.release_unstarted(self.ctx.worker_id, held)

    async def _resume(self, group: TaskGroup) -> None:
        """Take up the unfinished remote batches of our batches whose driver is gone: its own
        lease on the remote batch passed, or it stopped, or its process on this host died."""
        ctx = self.ctx
        await ctx.store.expire_dead_local_workers(socket.gethostname())
        for rb in await ctx.store.remote_batches(ctx.lane.batch_ids, unfinished_only=True):
            if rb.id in self._driving or rb.route != self.route.name:
                continue
            taken = await ctx.store.take_remote_batch(
                rb.id, ctx.worker_id, lease_seconds=self.lease_seconds
            )
            if taken is not None:
                self._driving.add(taken.id)
                group.start_soon(self._drive, taken, True)

    async def _claim(self) -> list[Job]:
        """Runnable jobs, up to a remote batch's worth, gathered for ``batch_max_wait``."""
        ctx, route = self.ctx, self.route
        claimed: list[Job] = []
        began = anyio.current_time()
        while len(claimed) < route.batch_max_lines and not ctx.stopping.is_set():
            limit = min(CLAIM_CHUNK, route.batch_max_lines - len(claimed))
            jobs = await ctx.store.claim(
                worker_id=ctx.worker_id,
                batch_ids=ctx.lane.batch_ids,
                limit=limit,
                lease_seconds=self.lease_seconds,
                cap=route.max_in_flight,
            )
            ctx.lane.held.update(j.id for j in jobs)
            claimed += jobs
            if len(jobs) == limit:
                continue  # more are runnable now: the wait is for jobs that are not yet
            left = route.batch_max_wait - (anyio.current_time() - began)
            if not claimed or left <= 0:
                break
            if not jobs:
                with anyio.move_on_after(min(IDLE_POLL, left)):
                    await ctx.stopping.wait()
        return claimed

    async def _gather(self, group: TaskGroup) -> int:
        """Claim, plan and open remote batches; returns how many were opened."""
        ctx = self.ctx
        claimed = await self._claim()
        if ctx.stopping.is_set() or not claimed:
            return 0
        claimed = self._hand_over(group, claimed)
        try:
            return await self._open_all(group, claimed)
        except BaseException:
            # Whatever did not become a line of an opened remote batch reserved nothing.
            for job in claimed:
                if job.id in ctx.lane.held:
                    ctx.settled(job.id, None)
            raise

    async def _open_all(self, group: TaskGroup, claimed: list[Job]) -> int:
        """Plan ``claimed``, reserve their budget and open them as remote batches."""
        ctx = self.ctx
        sized: list[Sized[tuple[Job, PlannedLine, float]]] = []
        for job in claimed:
            try:
                planned = await ctx.plan(job)
                worst = ctx.jobs.worst_price(ctx.lane, job)
            except AttemptError as exc:
                await self._unsent(job, exc)
                continue
            reservation = await ctx.jobs.spending.reserve(job.batch_id, worst)
            if reservation is None:  # the budget has no room for it: it stays queued
                await self._unsent(job, budget_stop=ctx.jobs.spending.stopped)
                continue
            ctx.reservations[job.id] = reservation
            model = str(planned.body.get("model") or self.route.model)
            sized.append(
                Sized(
                    item=(job, planned, worst),
                    batch_id=job.batch_id,
                    endpoint=planned.endpoint,
                    model=model,
                    size=planned.size,
                )
            )
        found = gather(
            sized, max_lines=self.route.batch_max_lines, max_bytes=self.route.batch_max_bytes
        )
        for job, planned, _ in found.too_large:
            limit = self.route.batch_max_bytes
            message = f"its batch line is {planned.size:,} bytes, over batch_max_bytes {limit:,}"
            await self._unsent(job, AttemptError(Outcome.INVALID_REQUEST, message, sent=False))
        opened = 0
        for lines in found.groups:
            rb = await self._open(lines.batch_id, lines.endpoint, lines.model, lines.items)
            if rb is not None:
                opened += 1
                self._driving.add(rb.id)
                group.start_soon(self._drive, rb, False)
        return opened

    def _hand_over(self, group: TaskGroup, claimed: list[Job]) -> list[Job]:
        """Send jobs whose last line failed in a retryable way to the ``--fallback`` route;
        returns the others (lines that were never run, or new, stay in remote batches)."""
        if self.fallback is None:
            return claimed
        kept = []
        for job in claimed:
            if job.last_outcome and Outcome(job.last_outcome).retryable:
                group.start_soon(self._synchronously, self.fallback, job)
            else:
                kept.append(job)
        return kept

    async def _synchronously(self, lane: Lane, job: Job) -> None:
        try:
            async with self._synchronous:
                await self.ctx.jobs.run_job(lane, job)
        finally:
            self.ctx.lane.held.discard(job.id)

    async def _unsent(
        self, job: Job, error: AttemptError | None = None, *, budget_stop: str | None = None
    ) -> None:
        """A gathered job that goes into no remote batch: failed, or back to the queue."""
        self.ctx.settled(job.id, None)
        await self.ctx.jobs.leave_unsent(self.ctx.lane, job, error, budget_stop=budget_stop)
        self.ctx.lane.held.discard(job.id)

    async def _open(
        self,
        batch_id: str,
        endpoint: str,
        model: str,
        items: list[tuple[Job, PlannedLine, float]],
    ) -> RemoteBatch | None:
        """Commit the remote batch's row and its lines' ``sending`` rows in one transaction."""
        ctx, route = self.ctx, self.route
        now = utcnow()
        starts = [
            AttemptStart(
                id=new_request_id(),
                job_id=job.id,
                batch_id=job.batch_id,
                worker_id=ctx.worker_id,
                route=route.name,
                provider=route.provider,
                shape=route.shape.value,
                endpoint=planned.endpoint,
                model=model,
                billing_unit=route.billing,
                params=planned.params,
                worst_case_usd=worst,
                started_at=now,
            )
            for job, planned, worst in items
        ]
        rb = RemoteBatch(
            id="rb" + secrets.token_hex(8),
            batch_id=batch_id,
            route=route.name,
            endpoint=endpoint_url(endpoint),
            model=model,
            step=RemoteStep.PREPARING,
            line_count=len(starts),
            created_at=now,
            updated_at=now,
            bytes=sum(planned.size for _, planned, _ in items),
            worker_id=ctx.worker_id,
            lease_expires=now + timedelta(seconds=self.lease_seconds),
        )
        with anyio.CancelScope(shield=True):
            written = await ctx.store.open_remote_batch(rb, starts)
        ctx.lane.held.difference_update(job.id for job, _, _ in items)
        opened = set(written)
        kept = {s.job_id for s in starts if s.id in opened}
        for job, _, _ in items:
            if job.id not in kept:
                ctx.settled(job.id, None)
        if not written:
            return None
        return replace(rb, line_count=len(written))


def remote_driver(
    *,
    store: DriverStore,
    jobs: JobRunner,
    lane: Lane,
    data_dir: Path,
    stats: RunStats,
    stopping: anyio.Event,
    lease_seconds: float,
    may_claim: Callable[[], bool],
    fallback: Lane | None = None,
) -> RemoteDriver:
    """The driver of ``lane``'s remote batches, for a run (see :class:`RemoteDriver`)."""
    ctx = RemoteContext(
        store=store,
        jobs=jobs,
        lane=lane,
        remote=RemoteClient(lane.client),
        data_dir=data_dir,
        worker_id=jobs.worker_id,
        stats=stats,
        stopping=stopping,
    )
    return RemoteDriver(ctx, lease_seconds=lease_seconds, may_claim=may_claim, fallback=fallback)
