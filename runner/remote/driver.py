"""The remote lane of a run: runnable jobs gathered into remote batches, each driven to its end.

Every step is recorded before the next starts, so a process killed anywhere leaves the
remote batch where the next run's driver takes it up (:class:`runner.models.RemoteStep`):

1. ``preparing``: the jobs are claimed, then the remote batch's row and a ``sending`` attempt
   row for each of its lines commit in one transaction, before anything leaves;
2. the input file is written (temporary file, then renamed) and uploaded under a name that
   carries our id; after a crash it is looked up by that name before any new upload;
3. ``uploaded``: the remote batch is created with our ids in its metadata; after a crash (or
   an error that may have come after the provider created it) it is looked up by those
   and its input file before any new creation;
4. ``submitted``: polled with backoff, its status and counts recorded each time;
5. ``applying``: its result files downloaded and applied line by line (see
   :mod:`runner.remote.apply`), the files we uploaded deleted;
6. ``done``.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path

import anyio
from anyio.abc import TaskGroup

from runner.errors import AttemptError
from runner.models import Job, JobState, Outcome, RemoteStep, utcnow
from runner.pricing import PricedJob, PriceNotFound, worst_case
from runner.remote.apply import apply_results, download_results, not_run, settle_unanswered
from runner.remote.client import RemoteClient, RemoteState
from runner.remote.context import DriverStore, RemoteContext
from runner.remote.gather import Sized, gather
from runner.remote.lines import PlannedLine, endpoint_url
from runner.remote.prepare import upload_input, write_input
from runner.run.attempt import JobRunner
from runner.run.lane import Lane
from runner.run.records import new_request_id
from runner.run.stats import JobSettled, RemoteProgress, RunStats
from runner.store import AttemptStart, RemoteBatch, RemoteChange

#: How long an idle driver waits before looking for runnable jobs again.
IDLE_POLL = 0.5
#: How often a driver looks for remote batches whose driver died.
RESUME_EVERY = 10.0
#: Jobs claimed per claim while gathering (a claim's statement binds one variable per job).
CLAIM_CHUNK = 5000
#: The longest wait between retries of a failed Files or Batches call.
MAX_BACKOFF = 60.0
#: Slack (seconds) for clocks when looking for a remote batch created before a crash.
CLOCK_SLACK = 600


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
        self._synchronous = anyio.CapacityLimiter(fallback.concurrency if fallback else 1)

    async def run(self) -> None:
        """Gather and drive until nothing is runnable and no remote batch of ours is live."""
        ctx = self.ctx
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
            with anyio.CancelScope(shield=True):
                await self._release_held()

    async def _release_held(self) -> None:
        held = sorted(self.ctx.lane.held)
        self.ctx.lane.held.clear()
        await self.ctx.store.release_unstarted(self.ctx.worker_id, held)

    async def _resume(self, group: TaskGroup) -> None:
        """Take up the unfinished remote batches of our batches whose driver is gone."""
        ctx = self.ctx
        workers = await ctx.store.list_workers(live_within=self.lease_seconds)
        live = {w.id for w in workers}
        for rb in await ctx.store.remote_batches(ctx.lane.batch_ids, unfinished_only=True):
            if rb.id in self._driving or rb.route != self.route.name:
                continue
            taken = await ctx.store.take_remote_batch(rb.id, ctx.worker_id, live_workers=live)
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
        sized: list[Sized[tuple[Job, PlannedLine, float]]] = []
        for job in claimed:
            try:
                planned = await ctx.plan(job)
                worst = self._price(job)
            except AttemptError as exc:
                await self._unsent(job, exc)
                continue
            reservation = await ctx.jobs.spending.reserve(job.batch_id, worst)
            if reservation is None:  # the budget has no room for it: it stays queued
                stop = ctx.jobs.spending.stopped
                await ctx.store.release_unstarted(ctx.worker_id, [job.id])
                ctx.lane.held.discard(job.id)
                ctx.stats.record(
                    JobSettled(route=self.route.name, state=JobState.QUEUED, budget_stop=stop)
                )
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

    def _price(self, job: Job) -> float:
        try:
            return worst_case(self.ctx.jobs.book, self.route, PricedJob.from_job(job))
        except PriceNotFound as exc:
            raise AttemptError(Outcome.INVALID_REQUEST, str(exc), sent=False) from exc

    async def _unsent(self, job: Job, error: AttemptError) -> None:
        self.ctx.settled(job.id, None)
        await self.ctx.store.fail_unsent(job.id, error.outcome.value, error.message)
        self.ctx.lane.held.discard(job.id)
        self.ctx.stats.record(JobSettled(route=self.route.name, state=JobState.FAILED))

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

    async def _drive(self, rb: RemoteBatch, resumed: bool) -> None:
        """Take ``rb`` through its steps until it is done or the run stops."""
        ctx = self.ctx
        self._show(rb)
        backoff = self.route.poll_interval
        try:
            while rb.step is not RemoteStep.DONE and not ctx.stopping.is_set():
                if ctx.lane.gate.stopped is not None:
                    return
                try:
                    rb = await self._step(rb, resumed=resumed)
                    resumed, backoff = False, self.route.poll_interval
                except AttemptError as exc:
                    if exc.stops_route:
                        ctx.lane.gate.stop(f"{exc.outcome.value}: {exc.message}")
                        return
                    if not exc.outcome.retryable and exc.outcome is not Outcome.LOST:
                        if rb.step in (RemoteStep.PREPARING, RemoteStep.UPLOADED):
                            rb = await self._failed_whole(rb, exc)
                            continue
                        # Its lines may have run (and been paid): never settle them blind.
                        # The error is recorded; the driver takes it up again shortly.
                        change = RemoteChange(error=f"{exc.outcome.value}: {exc.message}")
                        await ctx.store.advance_remote_batch(rb.id, change)
                        return
                    # The call may have taken effect before it failed: look before redoing it.
                    resumed = True
                    with anyio.move_on_after(backoff):
                        await ctx.stopping.wait()
                    backoff = min(MAX_BACKOFF, backoff * 2)
        finally:
            self._driving.discard(rb.id)
            ctx.stats.remote.pop(rb.id, None)

    async def _step(self, rb: RemoteBatch, *, resumed: bool) -> RemoteBatch:
        if rb.step is RemoteStep.PREPARING:
            return await self._upload(rb, resumed=resumed)
        if rb.step is RemoteStep.UPLOADED:
            return await self._submit(rb, resumed=resumed)
        if rb.step is RemoteStep.SUBMITTED:
            return await self._poll(rb)
        return await self._apply(rb)

    async def _advance(self, rb: RemoteBatch, change: RemoteChange) -> RemoteBatch:
        with anyio.CancelScope(shield=True):
            await self.ctx.store.advance_remote_batch(rb.id, change)
        given = {f.name: getattr(change, f.name) for f in fields(change)}
        rb = replace(rb, **{k: v for k, v in given.items() if v is not None})
        self._show(rb)
        return rb

    async def _upload(self, rb: RemoteBatch, *, resumed: bool) -> RemoteBatch:
        """Steps 2: the input written and uploaded (found by name if a crash came first)."""
        ctx = self.ctx
        if await self._cancel_requested(rb):
            return await self._close_unsent(rb, "cancelled before it was sent", JobState.CANCELLED)
        size = rb.bytes
        path = ctx.path(rb.id, "input")
        if not (resumed and await anyio.Path(path).exists()):
            lines = await ctx.store.remote_lines(rb.id)
            written = await write_input(ctx, rb, lines, resumed=resumed)
            for line, error in written.failed:
                job = replace(line.job, attempts=max(0, line.job.attempts - 1))
                await ctx.jobs.settle_error(ctx.lane, job, line.start, error)
            if not written.lines:
                await ctx.jobs.ledger.flush()
                return await self._finish(rb)
            size = written.bytes
        file_id = await upload_input(ctx, rb, resumed=resumed)
        return await self._advance(
            rb, RemoteChange(step=RemoteStep.UPLOADED, input_file_id=file_id, bytes=size)
        )

    async def _submit(self, rb: RemoteBatch, *, resumed: bool) -> RemoteBatch:
        """Step 3: the remote batch created (found by our metadata if a crash came first)."""
        ctx = self.ctx
        assert rb.input_file_id is not None
        metadata = {"imagerun_batch": rb.batch_id, "imagerun_remote_batch": rb.id}
        state: RemoteState | None = None
        if resumed:
            since = int(rb.created_at.timestamp()) - CLOCK_SLACK
            state = await ctx.remote.find_batch(
                metadata=metadata, input_file_id=rb.input_file_id, since=since
            )
        if state is None:
            if await self._cancel_requested(rb):
                return await self._close_unsent(
                    rb, "cancelled before it was sent", JobState.CANCELLED
                )
            state = await ctx.remote.create(
                input_file_id=rb.input_file_id, endpoint=rb.endpoint, metadata=metadata
            )
        change = _observed(state, step=RemoteStep.SUBMITTED, submitted_at=utcnow())
        rb = await self._advance(rb, change)
        if await self._cancel_requested(rb) and not state.terminal:
            # `imagerun cancel` came while it was being created: it could not cancel it then.
            await ctx.remote.cancel(state.id)
        return rb

    async def _poll(self, rb: RemoteBatch) -> RemoteBatch:
        """Step 4: polled with backoff until its status is terminal."""
        ctx = self.ctx
        assert rb.remote_id is not None
        interval = self.route.poll_interval
        while True:
            state = await ctx.remote.retrieve(rb.remote_id)
            if state.terminal:
                change = _observed(state, step=RemoteStep.APPLYING, finished_at=utcnow())
                return await self._advance(rb, change)
            rb = await self._advance(rb, _observed(state))
            with anyio.move_on_after(interval):
                await ctx.stopping.wait()
            if ctx.stopping.is_set():
                return rb
            interval = min(interval * 1.5, self.route.poll_interval * 10)

    async def _apply(self, rb: RemoteBatch) -> RemoteBatch:
        """Step 5: results applied, lines never run settled, our files deleted."""
        ctx = self.ctx
        paths = await download_results(ctx, rb)
        applied = await apply_results(ctx, rb, paths)
        current = await self._current(rb)
        await settle_unanswered(ctx, current, unreadable=applied.unreadable)
        return await self._finish(current)

    async def _finish(self, rb: RemoteBatch) -> RemoteBatch:
        """Delete the files we uploaded and the local copies, then mark it done."""
        ctx = self.ctx
        for file_id in [rb.input_file_id, *rb.source_file_ids.values()]:
            if file_id:
                # One that cannot be deleted is left: the provider expires batch files itself.
                with contextlib.suppress(AttemptError):
                    await ctx.remote.delete_file(file_id)
        for kind in ("input", "output", "error"):
            await anyio.Path(ctx.path(rb.id, kind)).unlink(missing_ok=True)
        return await self._advance(rb, RemoteChange(step=RemoteStep.DONE))

    async def _failed_whole(self, rb: RemoteBatch, error: AttemptError) -> RemoteBatch:
        """The provider refused the remote batch itself (its file or its creation)."""
        why = f"the provider refused the remote batch: {error.message}"
        await self.ctx.store.advance_remote_batch(rb.id, RemoteChange(error=why))
        return await self._close_unsent(rb, why, JobState.FAILED)

    async def _close_unsent(self, rb: RemoteBatch, why: str, state: JobState) -> RemoteBatch:
        for line in await self.ctx.store.remote_lines(rb.id):
            await not_run(self.ctx, line, why, state)
        await self.ctx.jobs.ledger.flush()
        return await self._finish(rb)

    async def _current(self, rb: RemoteBatch) -> RemoteBatch:
        found = await self.ctx.store.remote_batches([rb.batch_id])
        return next((r for r in found if r.id == rb.id), rb)

    async def _cancel_requested(self, rb: RemoteBatch) -> bool:
        return (await self._current(rb)).cancel_requested

    def _show(self, rb: RemoteBatch) -> None:
        counts = rb.request_counts
        known = self.ctx.stats.remote.get(rb.id)
        self.ctx.stats.remote[rb.id] = RemoteProgress(
            route=rb.route,
            status=rb.status or rb.step.value,
            lines=rb.line_count,
            completed=counts.get("completed", 0),
            failed=counts.get("failed", 0),
            since=known.since if known is not None else anyio.current_time(),
        )


def _observed(state: RemoteState, **extra: object) -> RemoteChange:
    """What a poll of the provider tells about a remote batch."""
    return RemoteChange(
        remote_id=state.id,
        status=state.status,
        request_counts=state.request_counts,
        output_file_id=state.output_file_id,
        error_file_id=state.error_file_id,
        error=state.errors,
        **extra,  # type: ignore[arg-type]
    )


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
