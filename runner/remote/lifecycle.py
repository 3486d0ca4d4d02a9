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
"""

from __future__ import annotations

import contextlib
from dataclasses import fields, replace

import anyio

from runner.errors import AttemptError
from runner.models import JobState, Outcome, RemoteStep, utcnow
from runner.remote.apply import apply_results, download_results, not_run, settle_unanswered
from runner.remote.client import RemoteState
from runner.remote.context import RemoteContext
from runner.remote.prepare import upload_input, write_input
from runner.run.stats import RemoteProgress
from runner.store import RemoteBatch, RemoteChange

#: The longest wait between retries of a failed Files or Batches call.
MAX_BACKOFF = 60.0
#: Slack (seconds) for clocks when looking for a remote batch created before a crash.
CLOCK_SLACK = 600


class Lifecycle:
    """Drives remote batches of one lane through their steps (see the module docstring)."""

    def __init__(self, ctx: RemoteContext) -> None:
        self.ctx = ctx
        self.route = ctx.lane.route

    async def drive(self, rb: RemoteBatch, resumed: bool) -> None:
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
        """Step 2: the input written and uploaded (found by name if a crash came first)."""
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
