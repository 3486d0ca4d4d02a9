"""The group-committing ledger writer: what is committed when, and what survives a stop."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from runner.abc import GroupLedger
from runner.models import AttemptState, Job, JobState, Outcome, utcnow
from runner.store import AttemptStart, LeaseLost, Store

from .factories import attempt_rows, claim_all, job_row, output_of, result_of, specs, start_of
from .factories import submit as submit_batch

pytestmark = pytest.mark.anyio


async def claimed(store: Store, n: int) -> list[Job]:
    batch = (await submit_batch(store, "group", specs(n))).batch
    return await claim_all(store, batch.id, "w1")


@pytest.fixture
async def writer(store: Store) -> AsyncIterator[GroupLedger]:
    ledger = store.group_ledger()
    async with anyio.create_task_group() as tg:
        await tg.start(ledger.run)
        yield ledger
        tg.cancel_scope.cancel()


async def test_a_start_is_visible_to_another_process_when_the_verb_returns(
    store: Store, db_url: str, writer: GroupLedger
) -> None:
    [job] = await claimed(store, 1)
    await writer.start_attempt(start_of(job, "w1"))

    observer = await Store.open(db_url, migrate=False)
    try:
        [attempt] = await attempt_rows(observer, job.id)
        assert attempt.state == AttemptState.SENDING
    finally:
        await observer.close()


async def test_finishes_queue_and_flush_commits_them(store: Store, writer: GroupLedger) -> None:
    jobs = await claimed(store, 3)
    starts = [start_of(job, "w1") for job in jobs]
    for start in starts:
        await writer.start_attempt(start)
    for start in starts:
        await writer.complete(result_of(start, Outcome.OK), [output_of(start, 0)])

    await writer.flush()

    for job in jobs:
        assert (await job_row(store, job.id)).state == JobState.SUCCEEDED
        [attempt] = await attempt_rows(store, job.id)
        assert (attempt.state, attempt.outcome) == (AttemptState.DONE, Outcome.OK)


async def test_a_finish_rides_with_the_next_start_at_the_latest(
    store: Store, writer: GroupLedger
) -> None:
    """A finish waits for no commit of its own, but is never left behind a later start."""
    first, second = await claimed(store, 2)
    start = start_of(first, "w1")
    await writer.start_attempt(start)
    await writer.complete(result_of(start, Outcome.OK), [output_of(start, 0)])

    await writer.start_attempt(start_of(second, "w1"))

    assert (await job_row(store, first.id)).state == JobState.SUCCEEDED
    [attempt] = await attempt_rows(store, second.id)
    assert attempt.state == AttemptState.SENDING


async def test_a_finish_no_start_follows_is_committed_by_itself_soon(
    store: Store, writer: GroupLedger
) -> None:
    """The last jobs of a run (or a lane held by a pause) still show finished at once."""
    [job] = await claimed(store, 1)
    start = start_of(job, "w1")
    await writer.start_attempt(start)
    await writer.fail(result_of(start, Outcome.INVALID_REQUEST))

    with anyio.fail_after(5):
        while (await job_row(store, job.id)).state != JobState.FAILED:
            await anyio.sleep(0.01)


async def test_concurrent_starts_share_commits_and_each_lost_lease_is_told_apart(
    store: Store,
) -> None:
    jobs = await claimed(store, 40)
    foreign = start_of(jobs[0], "someone-else")  # not the lease holder: must not be written
    ledger = store.group_ledger()
    verdicts: dict[str, str] = {}

    async def start(job_start: AttemptStart) -> None:
        try:
            await ledger.start_attempt(job_start)
            verdicts[job_start.id] = "written"
        except LeaseLost:
            verdicts[job_start.id] = "lease lost"

    mine = [start_of(job, "w1") for job in jobs[1:]]
    async with anyio.create_task_group() as tg:
        await tg.start(ledger.run)
        async with anyio.create_task_group() as starters:
            for item in [foreign, *mine]:
                starters.start_soon(start, item)
        tg.cancel_scope.cancel()

    assert verdicts[foreign.id] == "lease lost"
    assert all(verdicts[s.id] == "written" for s in mine)
    assert await attempt_rows(store, jobs[0].id) == []
    for job in jobs[1:]:
        assert len(await attempt_rows(store, job.id)) == 1


async def test_a_lone_start_for_a_lost_lease_writes_nothing(
    store: Store, writer: GroupLedger
) -> None:
    """A start that commits alone (one statement on PostgreSQL) checks the lease as a group
    does: the job is untouched and its caller is told not to send."""
    first, second = await claimed(store, 2)
    with pytest.raises(LeaseLost):
        await writer.start_attempt(start_of(first, "someone-else"))
    await writer.start_attempt(retry := start_of(second, "w1"))
    await writer.retry_later(result_of(retry, Outcome.SERVER_ERROR), utcnow())
    await writer.flush()
    [again] = await claim_all(store, second.batch_id, "w1")
    await writer.start_attempt(start_of(again, "w1"))  # its second attempt

    assert await attempt_rows(store, first.id) == []
    assert (await job_row(store, first.id)).attempts == 0
    assert [a.number for a in await attempt_rows(store, second.id)] == [1, 2]
    assert (await job_row(store, second.id)).attempts == 2


@pytest.mark.parametrize("db_kind", [pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_the_ledger_carries_on_when_the_server_drops_its_connection(
    store: Store, writer: GroupLedger, db_kind: str
) -> None:
    """The group ledger keeps one connection between commits: dropped by the server (a
    failover, an idle timeout, an administrator), the next write takes a new one."""
    first, second = await claimed(store, 2)
    await writer.start_attempt(before := start_of(first, "w1"))
    await writer.complete(result_of(before, Outcome.OK), [output_of(before, 0)])
    await writer.flush()

    async with store.db.autocommit() as conn:
        dropped = await conn.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    assert dropped >= 1  # the ledger's own among them

    await writer.start_attempt(after := start_of(second, "w1"))
    await writer.complete(result_of(after, Outcome.OK), [output_of(after, 0)])
    await writer.flush()
    for job in (first, second):
        assert (await job_row(store, job.id)).state == JobState.SUCCEEDED


async def test_writes_queued_when_the_writer_is_stopped_are_committed(store: Store) -> None:
    """A run that stops (Ctrl-C, the end of the work) never drops a queued ledger write."""
    jobs = await claimed(store, 5)
    ledger = store.group_ledger()
    starts = [start_of(job, "w1") for job in jobs]
    async with anyio.create_task_group() as tg:
        await tg.start(ledger.run)
        for start in starts:
            await ledger.start_attempt(start)
        for start in starts:
            await ledger.fail(result_of(start, Outcome.INVALID_REQUEST))
        tg.cancel_scope.cancel()  # before the writer had a turn to commit the failures

    for job in jobs:
        assert (await job_row(store, job.id)).state == JobState.FAILED


async def test_a_failed_commit_is_raised_by_flush_and_by_every_later_verb(
    store: Store, writer: GroupLedger
) -> None:
    [job] = await claimed(store, 1)
    start = start_of(job, "w1")
    await writer.start_attempt(start)
    # The same output twice violates the outputs table's unique (job, k): the whole
    # group is rolled back, and nobody waits on a finish to hear it, so the writer keeps it.
    await writer.complete(result_of(start, Outcome.OK), [output_of(start, 0), output_of(start, 0)])

    with pytest.raises(IntegrityError):
        await writer.flush()
    with pytest.raises(IntegrityError):
        await writer.fail(result_of(start, Outcome.INVALID_REQUEST))
    assert (await job_row(store, job.id)).state == JobState.RUNNING
    [attempt] = await attempt_rows(store, job.id)
    assert attempt.state == AttemptState.SENDING  # left for recovery to judge, never lost


async def test_a_start_cancelled_while_committing_still_returns_to_its_caller(
    store: Store, writer: GroupLedger
) -> None:
    """Whoever started an attempt gets to finish it: a cancellation waits until the start
    is settled, so no `sending` row is left behind for a request that never left."""
    [job] = await claimed(store, 1)
    start = start_of(job, "w1")
    returned = False
    with anyio.CancelScope() as scope:
        scope.cancel()
        await writer.start_attempt(start)
        returned = True
    assert returned
    await writer.fail(result_of(start, Outcome.INTERRUPTED))
    await writer.flush()
    [attempt] = await attempt_rows(store, job.id)
    assert (attempt.state, attempt.outcome) == (AttemptState.DONE, Outcome.INTERRUPTED)


async def test_writes_after_the_writer_stopped_are_committed_by_their_callers(
    store: Store,
) -> None:
    jobs = await claimed(store, 2)
    ledger = store.group_ledger()
    async with anyio.create_task_group() as tg:
        await tg.start(ledger.run)
        tg.cancel_scope.cancel()

    late = start_of(jobs[0], "w1")
    await ledger.start_attempt(late)
    await ledger.complete(result_of(late, Outcome.OK), [output_of(late, 0)])
    await ledger.flush()

    assert (await job_row(store, jobs[0].id)).state == JobState.SUCCEEDED
