"""One remote batch's life, step by step, from its ledger rows to its lines applied.

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

Every call that changes something at the provider (an upload, a creation, a cancel, a
deletion) is fenced on the remote batch's lease: just before it, the lease is renewed on the
condition that it is still ours, for longer than the call may take, and the call is given no
longer than that. A driver that stalled past its lease (its database away) and was taken
over stops there, so the driver that took over, having looked, finds what was done.

An error that does not pass, before submission, means the provider refused the remote batch
(its lines never ran: closed as not charged). After submission, or while looking for a remote
batch that may have been created, its lines may have run and been paid: reading it is tried
:data:`COLLECT_TRIES` times in a row and for :data:`COLLECT_SPAN` seconds (a file the provider
has just written may answer 404 for a while; any read that succeeds starts the count again),
then it is given up as ``uncollected`` and its lines are held as ``unknown`` (never re-sent
by themselves), with what to do in their error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import fields, replace
from functools import partial
from typing import TypeVar

import anyio

from runner.errors import AttemptError
from runner.models import JobState, Outcome, RemoteStep, utcnow
from runner.remote.apply import (
    apply_results,
    download_results,
    hold_unknown,
    not_run,
    settle_unanswered,
)
from runner.remote.client import RemoteState
from runner.remote.context import RemoteContext
from runner.remote.prepare import INPUT_PURPOSE, input_filename, upload_input, write_input
from runner.run.stats import RemoteProgress
from runner.store import RemoteBatch, RemoteChange

#: The longest wait between retries of a failed Files or Batches call.
MAX_BACKOFF = 60.0
#: Slack (seconds) for clocks when looking for a remote batch created before a crash.
CLOCK_SLACK = 600
#: Reads of a submitted remote batch (its status, its result files) that may fail in a row
#: for a reason that does not pass before it is given up as ``uncollected``.
COLLECT_TRIES = 3
#: The least time (seconds) such reads are tried, from the first of those failures in a row,
#: before it is given up; counted by this process (a restart counts it afresh).
COLLECT_SPAN = 600.0
#: Seconds a fenced provider call ends before the lease it was made under: room for clocks
#: and for the provider to record what it did before a driver taking over looks.
FENCE_MARGIN = 5.0
#: The slowest upload (bytes per second) an input file is given time for, beyond the
#: route's timeout.
UPLOAD_RATE = 256 * 1024

T = TypeVar("T")


class Displaced(Exception):
    """Another worker drives the remote batch now (this one stalled past its lease)."""


class Lifecycle:
    """Drives remote batches of one lane through their steps (see the module docstring).

    Each remote batch is leased to this worker for ``lease_seconds`` at a time, renewed while
    it is driven; every change recorded about it is conditional on that lease, and a driver
    whose remote batch was taken over stops at once, recording nothing more.
    """

    def __init__(self, ctx: RemoteContext, *, lease_seconds: float) -> None:
        self.ctx = ctx
        self.route = ctx.lane.route
        self.lease_seconds = lease_seconds
        #: Until when (event loop clock) a fenced call in flight needs each lease held.
        self._held: dict[str, float] = {}
        #: One renewal of a lease at a time, so the last one written is the last computed.
        self._renewing: dict[str, anyio.Lock] = {}
        #: When (event loop clock) each remote batch's reads began failing in a row.
        self._failing_since: dict[str, float] = {}
        #: The wait before a remote batch's next try after a failed call (doubling each time).
        self._backoff: dict[str, float] = {}

    async def drive(self, rb: RemoteBatch, resumed: bool) -> None:
        """Take ``rb`` through its steps until it ends, the run stops, or it is taken over."""
        self._show(rb)
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._keep_lease, rb.id, group.cancel_scope)
                with contextlib.suppress(Displaced):
                    await self._steps(rb, resumed)
                group.cancel_scope.cancel()
        finally:
            self.ctx.stats.remote.pop(rb.id, None)
            self._renewing.pop(rb.id, None)
            self._failing_since.pop(rb.id, None)
            self._backoff.pop(rb.id, None)

    async def _keep_lease(self, rb_id: str, scope: anyio.CancelScope) -> None:
        """Renew the lease on ``rb_id`` while it is driven; if it was lost, stop driving."""
        while True:
            await anyio.sleep(self.lease_seconds / 3)
            if not await self._renew(rb_id, RemoteChange()):
                scope.cancel()
                return

    async def _steps(self, rb: RemoteBatch, resumed: bool) -> None:
        ctx = self.ctx
        while not rb.step.ended and not ctx.stopping.is_set():
            if ctx.lane.gate.stopped is not None:
                return
            try:
                rb = await self._step(rb, resumed=resumed)
                resumed = False
                continue
            except AttemptError as exc:
                if exc.stops_route:
                    ctx.lane.gate.stop(f"{exc.outcome.value}: {exc.message}")
                    return
                if not exc.outcome.retryable and exc.outcome is not Outcome.LOST:
                    rb = await self._refused(rb, exc)
                    if rb.step.ended:
                        continue
            # The call may have taken effect before it failed: look before redoing it.
            resumed = True
            backoff = self._backoff.get(rb.id, self.route.poll_interval)
            self._backoff[rb.id] = min(MAX_BACKOFF, backoff * 2)
            with anyio.move_on_after(backoff):
                await ctx.stopping.wait()

    async def _refused(self, rb: RemoteBatch, error: AttemptError) -> RemoteBatch:
        """An error that does not pass: before submission the remote batch was refused (its
        lines never ran); after it, reading it is tried a few times, then given up."""
        why = f"{error.outcome.value}: {error.message}"
        if rb.step in (RemoteStep.PREPARING, RemoteStep.UPLOADED):
            return await self._failed_whole(rb, error)
        # Its lines may have run (and been paid): never settle them blind.
        # As recorded: a poll that succeeded since ``rb`` was read set it back to none.
        rb = await self._current(rb)
        failures = rb.collect_failures + 1
        since = self._failing_since.setdefault(rb.id, anyio.current_time())
        tried = anyio.current_time() - since
        if failures >= COLLECT_TRIES and tried >= COLLECT_SPAN:
            what = f"its results could not be read {failures} times in a row over {tried:.0f} s"
            return await self._uncollected(rb, f"{what} ({why})")
        return await self._advance(rb, RemoteChange(error=why, collect_failures=failures))

    async def _step(self, rb: RemoteBatch, *, resumed: bool) -> RemoteBatch:
        if rb.step is RemoteStep.PREPARING:
            return await self._upload(rb, resumed=resumed)
        if rb.step is RemoteStep.UPLOADED:
            return await self._submit(rb, resumed=resumed)
        if rb.step is RemoteStep.SUBMITTED:
            return await self._poll(rb)
        return await self._apply(rb)

    async def _advance(
        self, rb: RemoteBatch, change: RemoteChange, read: bool = False
    ) -> RemoteBatch:
        """Record ``change`` (and renew our lease); :class:`Displaced` if it is not ours.
        After a read of the provider that succeeded (``read``, or a new step) failed reads
        are counted again from none, and the next failure waits one poll interval again."""
        if change.step is not None or read:
            self._failing_since.pop(rb.id, None)
            self._backoff.pop(rb.id, None)
            if rb.collect_failures:
                change = replace(change, collect_failures=0)
        if not await self._renew(rb.id, change):
            raise Displaced(rb.id)
        given = {f.name: getattr(change, f.name) for f in fields(change)}
        rb = replace(rb, **{k: v for k, v in given.items() if v is not None})
        self._show(rb)
        return rb

    async def _renew(self, rb_id: str, change: RemoteChange) -> bool:
        """Record ``change`` and renew our lease, for as long as a fenced call in flight
        needs it if that is longer; whether the remote batch is still ours."""
        lock = self._renewing.setdefault(rb_id, anyio.Lock())
        with anyio.CancelScope(shield=True):
            async with lock:
                held = self._held.get(rb_id, 0.0) - anyio.current_time()
                kept = await self.ctx.store.advance_remote_batch(
                    rb_id,
                    change,
                    owner=self.ctx.worker_id,
                    lease_seconds=max(self.lease_seconds, held),
                )
        return kept

    async def _fenced(self, rb: RemoteBatch, seconds: float, call: Callable[[], Awaitable[T]]) -> T:
        """Make ``call``, which changes something at the provider, only once ``rb`` is ours
        for ``seconds`` (the most it is given) and :data:`FENCE_MARGIN` more.

        Raises:
            Displaced: another driver took ``rb`` over; the call was not made.
            AttemptError: the call failed, or did not end in ``seconds`` (it may have taken
                effect: the step looks before redoing it).
        """
        self._held[rb.id] = anyio.current_time() + seconds + FENCE_MARGIN
        try:
            if not await self._renew(rb.id, RemoteChange()):
                raise Displaced(rb.id)
            with anyio.fail_after(seconds):
                answer = await call()
        except TimeoutError:
            raise AttemptError(Outcome.TIMEOUT, f"no answer within {seconds:g} s") from None
        finally:
            self._held.pop(rb.id, None)
        return answer

    async def _upload(self, rb: RemoteBatch, *, resumed: bool) -> RemoteBatch:
        """Step 2: the input written and uploaded (found by name if a crash came first)."""
        ctx = self.ctx
        if await self._cancel_requested(rb):
            return await self._close_unsent(rb, "cancelled before it was sent", JobState.CANCELLED)
        size = rb.bytes
        path = ctx.path(rb.id, "input")
        if not (resumed and await anyio.Path(path).exists()):
            lines = await ctx.store.remote_lines(rb.id)
            written = await write_input(ctx, rb, lines, resumed=resumed)
            if written.source_file_ids != rb.source_file_ids:
                # Recorded before the input leaves: they are deleted once it is applied.
                change = RemoteChange(source_file_ids=written.source_file_ids)
                rb = await self._advance(rb, change)
            for line, error in written.failed:
                job = replace(line.job, attempts=max(0, line.job.attempts - 1))
                await ctx.jobs.settle_error(ctx.lane, job, line.start, error)
            if not written.lines:
                await ctx.jobs.ledger.flush()
                return await self._finish(rb)
            size = written.bytes
        found = None
        if resumed:
            found = await ctx.remote.find_file(input_filename(rb.id), INPUT_PURPOSE)
        if found is not None:
            file_id = found.id
        else:
            took = self.route.timeout + size / UPLOAD_RATE
            file_id = await self._fenced(rb, took, partial(upload_input, ctx, rb, resumed=False))
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
            try:
                state = await ctx.remote.find_batch(
                    metadata=metadata, input_file_id=rb.input_file_id, since=since
                )
            except AttemptError as exc:
                if exc.stops_route or exc.outcome.retryable or exc.outcome is Outcome.LOST:
                    raise
                # It may exist (and run, and be paid): neither create another nor call it unrun.
                why = f"looking for it on the provider failed ({exc.outcome.value}: {exc.message})"
                return await self._uncollected(rb, why)
        if state is None:
            if await self._cancel_requested(rb):
                return await self._close_unsent(
                    rb, "cancelled before it was sent", JobState.CANCELLED
                )
            create = partial(
                ctx.remote.create,
                input_file_id=rb.input_file_id,
                endpoint=rb.endpoint,
                metadata=metadata,
            )
            state = await self._fenced(rb, self.route.timeout, create)
        change = _observed(state, step=RemoteStep.SUBMITTED, submitted_at=utcnow())
        rb = await self._advance(rb, change)
        if await self._cancel_requested(rb) and not state.terminal:
            # `imagerun cancel` came while it was being created: it could not cancel it then.
            await self._fenced(rb, self.route.timeout, partial(ctx.remote.cancel, state.id))
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
            rb = await self._advance(rb, _observed(state), read=True)
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
                    delete = partial(ctx.remote.delete_file, file_id)
                    await self._fenced(rb, self.route.timeout, delete)
        for kind in ("input", "output", "error"):
            await anyio.Path(ctx.path(rb.id, kind)).unlink(missing_ok=True)
        return await self._advance(rb, RemoteChange(step=RemoteStep.DONE))

    async def _failed_whole(self, rb: RemoteBatch, error: AttemptError) -> RemoteBatch:
        """The provider refused the remote batch itself (its file or its creation)."""
        why = f"the provider refused the remote batch: {error.message}"
        rb = await self._advance(rb, RemoteChange(error=why))
        return await self._close_unsent(rb, why, JobState.FAILED)

    async def _uncollected(self, rb: RemoteBatch, what: str) -> RemoteBatch:
        """Give ``rb`` up: its lines are held, charge unknown, and it is marked ``uncollected``."""
        ctx = self.ctx
        where = (
            f"batch {rb.remote_id}" if rb.remote_id else f"metadata imagerun_remote_batch={rb.id}"
        )
        why = (
            f"remote batch {rb.id}: {what}. Its lines may have run and been charged, so they are "
            f"held as unknown, not re-sent: look for it on the provider ({where}) and download "
            "its output file, or `imagerun retry BATCH --unknown` to send them again (they may "
            "be paid twice)"
        )
        rb = await self._advance(rb, RemoteChange(error=why))  # still ours: hold its lines
        for line in await ctx.store.remote_lines(rb.id):
            await hold_unknown(ctx, line, why)
        await ctx.jobs.ledger.flush()
        ctx.stats.uncollected[rb.id] = why
        return await self._advance(rb, RemoteChange(step=RemoteStep.UNCOLLECTED))

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
