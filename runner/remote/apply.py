"""A finished remote batch's results applied to its lines' attempts, line by line.

The output and error files are streamed to disk first (temporary file, then renamed), then
read in chunks: each line settles its attempt exactly as a synchronous answer would (an
image decoded, verified and stored, priced from its own usage at the route's price; an error
classified, charged by the route's policy, retried or not). A line whose attempt is already
settled is skipped, so applying again after a crash records nothing twice. Lines in neither
file were never run (the remote batch expired, was cancelled, or failed as a whole): they
cost nothing, and their jobs go back to the queue, or are cancelled or failed as the remote
batch's end says.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import anyio

from runner.errors import AttemptError
from runner.models import ChargeStatus, JobState, Outcome
from runner.remote.context import RemoteContext
from runner.remote.lines import LineAnswer, read_answer
from runner.run.records import result_record
from runner.run.stats import JobSettled
from runner.store import RemoteBatch, RemoteLine

#: Result lines applied per store round trip.
CHUNK_LINES = 200


async def download_results(ctx: RemoteContext, rb: RemoteBatch) -> list[Path]:
    """The remote batch's output and error files on disk (downloaded unless already there)."""
    paths = []
    for kind, file_id in (("output", rb.output_file_id), ("error", rb.error_file_id)):
        if not file_id:
            continue
        path = ctx.path(rb.id, kind)
        if not await anyio.Path(path).exists():  # renamed into place only once whole
            await ctx.remote.download(file_id, path)
        paths.append(path)
    return paths


async def apply_results(ctx: RemoteContext, rb: RemoteBatch, paths: list[Path]) -> int:
    """Settle every line the result files answer; returns how many were settled now."""
    settled = 0
    for path in paths:
        async for chunk in _chunks(path):
            ran = {a.custom_id: a for a in chunk if a.ran}
            for line in await ctx.store.remote_lines(rb.id, list(ran)):
                await _settle(ctx, line, ran[line.start.id])
                settled += 1
    await ctx.jobs.ledger.flush()
    return settled


async def settle_unanswered(ctx: RemoteContext, rb: RemoteBatch) -> int:
    """Settle the lines no result file answered (never run); returns how many."""
    lines = await ctx.store.remote_lines(rb.id)
    if rb.status == "failed":
        why, state = f"the remote batch failed: {rb.error or 'no reason given'}", JobState.FAILED
    elif rb.cancel_requested:
        why, state = "cancelled before the provider ran it", JobState.CANCELLED
    else:
        why = f"the remote batch ended ({rb.status or rb.step.value}) before this line ran"
        state = JobState.QUEUED
    for line in lines:
        await not_run(ctx, line, why, state)
    await ctx.jobs.ledger.flush()
    return len(lines)


async def not_run(ctx: RemoteContext, line: RemoteLine, why: str, state: JobState) -> None:
    """Close a line that never ran as not charged; its job goes to ``state``."""
    error = AttemptError(Outcome.INTERRUPTED, why, sent=False)
    result = replace(
        result_record(line.start, Outcome.INTERRUPTED, exchange=None, error=error),
        expected_usd=0.0,
        charge_status=ChargeStatus.NOT_CHARGED,
    )
    if state is JobState.FAILED:
        await ctx.jobs.ledger.fail(result)
    else:
        await ctx.jobs.ledger.release(result, line.job.id, state)
    ctx.settled(line.job.id, None)
    ctx.stats.record(JobSettled(route=ctx.lane.route.name, state=state))


async def _settle(ctx: RemoteContext, line: RemoteLine, answer: LineAnswer) -> None:
    # The job as it was before this attempt started (the verdict counts this one itself).
    job = replace(line.job, attempts=max(0, line.job.attempts - 1))
    if answer.error is None:
        result = await ctx.jobs.settle_answer(
            ctx.lane, job, line.start, answer.body, answer.request_id
        )
    else:
        result = await ctx.jobs.settle_error(ctx.lane, job, line.start, answer.error)
    ctx.settled(line.job.id, result)


async def _chunks(path: Path) -> AsyncIterator[list[LineAnswer]]:
    """The answers in a result file, :data:`CHUNK_LINES` at a time (lines that do not parse
    are skipped: their attempts are then settled as never answered)."""
    chunk: list[LineAnswer] = []
    async with await anyio.open_file(path, "rb") as handle:
        async for raw in handle:
            if not raw.strip():
                continue
            try:
                chunk.append(read_answer(raw))
            except ValueError:
                continue
            if len(chunk) >= CHUNK_LINES:
                yield chunk
                chunk = []
    if chunk:
        yield chunk
