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
from dataclasses import dataclass, replace
from pathlib import Path

import anyio

from runner.errors import AttemptError
from runner.models import ChargeStatus, JobState, Outcome
from runner.remote.context import RemoteContext
from runner.remote.lines import LineAnswer, read_answer
from runner.run.records import result_record
from runner.run.stats import JobSettled
from runner.store import RemoteBatch, RemoteLine

#: Result lines applied per store round trip…
CHUNK_LINES = 200
#: …or fewer, once their bytes reach this (an image line holds megabytes of base64).
CHUNK_BYTES = 16 * 1024 * 1024


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


@dataclass(slots=True)
class Applied:
    """What applying the result files did."""

    settled: int = 0
    #: Result lines that did not parse: their attempts cannot be told apart from lines never
    #: run, so those are held, not re-sent.
    unreadable: int = 0


async def apply_results(ctx: RemoteContext, rb: RemoteBatch, paths: list[Path]) -> Applied:
    """Settle every line the result files answer."""
    applied = Applied()
    for path in paths:
        async for chunk in _chunks(path, applied):
            ran = {a.custom_id: a for a in chunk if a.ran}
            for line in await ctx.store.remote_lines(rb.id, list(ran)):
                await _settle(ctx, line, ran[line.start.id])
                applied.settled += 1
    await ctx.jobs.ledger.flush()
    return applied


async def settle_unanswered(ctx: RemoteContext, rb: RemoteBatch, *, unreadable: int = 0) -> int:
    """Settle the lines no result file answered (never run); returns how many.

    Args:
        unreadable: result lines that did not parse. One of the unanswered lines may then have
            run and been paid: they all fail with their charge unknown instead of being
            re-sent (``imagerun retry --failed`` sends them again, at the user's word).
    """
    lines = await ctx.store.remote_lines(rb.id)
    if unreadable:
        for line in lines:
            await _unreadable(ctx, line, unreadable)
        await ctx.jobs.ledger.flush()
        return len(lines)
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


async def hold_unknown(ctx: RemoteContext, line: RemoteLine, why: str) -> None:
    """Hold a line that may have run (and been paid) but whose result cannot be had: its
    attempt closes as lost with its charge unknown, its job ``unknown`` (never re-sent by
    itself; ``imagerun retry --unknown`` sends it again, at the user's word)."""
    error = AttemptError(Outcome.LOST, why)
    result = replace(
        result_record(line.start, Outcome.LOST, exchange=None, error=error),
        expected_usd=line.start.worst_case_usd,
        charge_status=ChargeStatus.UNKNOWN,
    )
    await ctx.jobs.ledger.release(result, line.job.id, JobState.UNKNOWN)
    ctx.settled(line.job.id, result)
    ctx.stats.record(JobSettled(route=ctx.lane.route.name, state=JobState.UNKNOWN))


async def _unreadable(ctx: RemoteContext, line: RemoteLine, count: int) -> None:
    why = f"{count} result line(s) of its remote batch did not parse: this one may have run"
    error = AttemptError(Outcome.BAD_RESPONSE, why)
    result = replace(
        result_record(line.start, Outcome.BAD_RESPONSE, exchange=None, error=error),
        expected_usd=line.start.worst_case_usd,
        charge_status=ChargeStatus.UNKNOWN,
    )
    await ctx.jobs.ledger.fail(result)
    ctx.settled(line.job.id, result)
    ctx.stats.attempts += 1
    ctx.stats.record(JobSettled(route=ctx.lane.route.name, state=JobState.FAILED))


async def _settle(ctx: RemoteContext, line: RemoteLine, answer: LineAnswer) -> None:
    # The job as it was before this attempt started (the verdict counts this one itself).
    job = replace(line.job, attempts=max(0, line.job.attempts - 1))
    ctx.stats.attempts += 1  # a line the provider ran is a request, as a synchronous one is
    if answer.error is None:
        result = await ctx.jobs.settle_answer(
            ctx.lane, job, line.start, answer.body, answer.request_id
        )
    else:
        result = await ctx.jobs.settle_error(ctx.lane, job, line.start, answer.error)
    ctx.settled(line.job.id, result)


async def _chunks(path: Path, applied: Applied) -> AsyncIterator[list[LineAnswer]]:
    """The answers in a result file, :data:`CHUNK_LINES` (or :data:`CHUNK_BYTES`) at a time
    (lines that do not parse are counted in ``applied.unreadable``)."""
    chunk: list[LineAnswer] = []
    held = 0
    async with await anyio.open_file(path, "rb") as handle:
        async for raw in handle:
            if not raw.strip():
                continue
            try:
                chunk.append(read_answer(raw))
            except ValueError:
                applied.unreadable += 1
                continue
            held += len(raw)
            if len(chunk) >= CHUNK_LINES or held >= CHUNK_BYTES:
                yield chunk
                chunk, held = [], 0
    if chunk:
        yield chunk
