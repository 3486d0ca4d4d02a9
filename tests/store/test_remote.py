"""Remote batch verbs, on SQLite and PostgreSQL: a remote batch's lines from their ledger rows
to settled, and the jobs in it out of reach of dead-worker recovery."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from runner.models import AttemptState, ChargeStatus, JobState, Outcome, RemoteStep, utcnow
from runner.store import RemoteBatch, RemoteChange, Store
from runner.store.tables import outputs, workers

from .factories import (
    LAPSED,
    attempt_rows,
    claim_all,
    job_row,
    output_of,
    result_of,
    specs,
    start_of,
    submit,
)

pytestmark = pytest.mark.anyio


#: The lease a driver in these tests holds its remote batch for.
LEASE = 60.0


def remote_batch(
    batch_id: str, worker: str, rb_id: str = "rb-test-1", *, lease: float = LEASE
) -> RemoteBatch:
    now = utcnow()
    return RemoteBatch(
        id=rb_id,
        batch_id=batch_id,
        route="sandbox-openai-batch",
        endpoint="/v1/images/generations",
        model="gpt-image-2",
        step=RemoteStep.PREPARING,
        line_count=0,
        created_at=now,
        updated_at=now,
        worker_id=worker,
        lease_expires=now + timedelta(seconds=lease),
    )


async def advance(store: Store, rb_id: str, change: RemoteChange, owner: str = "w1") -> bool:
    return await store.advance_remote_batch(rb_id, change, owner=owner, lease_seconds=LEASE)


async def test_opening_commits_the_remote_batch_and_a_sending_row_per_line(store: Store) -> None:
    batch = (await submit(store, "rb", specs(3))).batch
    jobs = await claim_all(store, batch.id, "w1")
    starts = [start_of(j, "w1") for j in jobs]

    written = await store.open_remote_batch(remote_batch(batch.id, "w1"), starts)

    assert sorted(written) == sorted(s.id for s in starts)
    (rb,) = await store.remote_batches([batch.id])
    assert (rb.step, rb.line_count, rb.worker_id) == (RemoteStep.PREPARING, 3, "w1")
    rows = [r for j in jobs for r in await attempt_rows(store, j.id)]
    assert {r.state for r in rows} == {AttemptState.SENDING.value}
    assert {r.remote_batch_id for r in rows} == {"rb-test-1"}
    lines = await store.remote_lines("rb-test-1")
    assert sorted(line.start.id for line in lines) == sorted(written)
    assert {line.job.id for line in lines} == {j.id for j in jobs}
    assert await store.remote_job_count([batch.id]) == 3


async def test_jobs_in_a_remote_batch_survive_their_workers_death(store: Store) -> None:
    """Lease recovery never judges a remote batch's lines unknown: no worker holds them."""
    batch = (await submit(store, "rb", specs(2))).batch
    jobs = await claim_all(store, batch.id, "w1", lease=LAPSED)
    await store.open_remote_batch(remote_batch(batch.id, "w1"), [start_of(j, "w1") for j in jobs])

    recovery = await store.recover_expired()

    assert (recovery.requeued, recovery.unknown) == (0, 0)
    assert await store.count_states([batch.id]) == {JobState.RUNNING: 2}
    assert await store.release_unstarted("w1", [j.id for j in jobs]) == 0


async def test_lines_whose_lease_was_lost_are_left_out(store: Store) -> None:
    batch = (await submit(store, "rb", specs(2))).batch
    jobs = await claim_all(store, batch.id, "w1")
    starts = [start_of(j, "w1") for j in jobs]
    starts[1] = replace(starts[1], worker_id="someone-else")

    written = await store.open_remote_batch(remote_batch(batch.id, "w1"), starts)

    assert written == [starts[0].id]
    (rb,) = await store.remote_batches([batch.id])
    assert rb.line_count == 1
    assert (await job_row(store, jobs[1].id)).lease_owner == "w1"


async def test_nothing_leased_opens_nothing(store: Store) -> None:
    batch = (await submit(store, "rb", specs(1))).batch
    (job,) = await claim_all(store, batch.id, "w1")
    start = replace(start_of(job, "w1"), worker_id="w2")

    assert await store.open_remote_batch(remote_batch(batch.id, "w1"), [start]) == []
    assert await store.remote_batches([batch.id]) == []


async def test_a_settled_line_is_no_longer_pending(store: Store) -> None:
    batch = (await submit(store, "rb", specs(2))).batch
    jobs = await claim_all(store, batch.id, "w1")
    starts = [start_of(j, "w1") for j in jobs]
    await store.open_remote_batch(remote_batch(batch.id, "w1"), starts)

    await store.complete(result_of(starts[0], Outcome.OK), [])

    pending = await store.remote_lines("rb-test-1", [s.id for s in starts])
    assert [line.start.id for line in pending] == [starts[1].id]
    assert await store.count_states([batch.id]) == {JobState.SUCCEEDED: 1, JobState.RUNNING: 1}


async def test_steps_and_ids_are_recorded(store: Store) -> None:
    batch = (await submit(store, "rb", specs(1))).batch
    jobs = await claim_all(store, batch.id, "w1")
    await store.open_remote_batch(remote_batch(batch.id, "w1"), [start_of(jobs[0], "w1")])

    await advance(
        store, "rb-test-1", RemoteChange(step=RemoteStep.UPLOADED, input_file_id="file-1", bytes=99)
    )
    await advance(
        store,
        "rb-test-1",
        RemoteChange(
            step=RemoteStep.SUBMITTED,
            remote_id="batch_1",
            status="in_progress",
            request_counts={"total": 1, "completed": 0, "failed": 0},
        ),
    )

    (rb,) = await store.remote_batches([batch.id], unfinished_only=True)
    assert (rb.step, rb.input_file_id, rb.bytes, rb.remote_id, rb.status) == (
        RemoteStep.SUBMITTED,
        "file-1",
        99,
        "batch_1",
        "in_progress",
    )
    assert rb.request_counts == {"total": 1, "completed": 0, "failed": 0}
    await advance(store, "rb-test-1", RemoteChange(step=RemoteStep.DONE))
    assert await store.remote_batches([batch.id], unfinished_only=True) == []


async def test_a_driver_keeps_its_remote_batch_while_its_own_lease_lasts(store: Store) -> None:
    """Judged by the driver's lease (60 s), not the taker's (1 s): it is not taken over."""
    batch = (await submit(store, "rb", specs(1))).batch
    jobs = await claim_all(store, batch.id, "w1")
    await store.open_remote_batch(remote_batch(batch.id, "w1"), [start_of(jobs[0], "w1")])

    assert await store.take_remote_batch("rb-test-1", "w2", lease_seconds=1.0) is None
    assert await advance(store, "rb-test-1", RemoteChange(status="in_progress"))
    (rb,) = await store.remote_batches([batch.id])
    assert (rb.worker_id, rb.status) == ("w1", "in_progress")


async def test_a_lapsed_lease_is_taken_over_and_the_old_driver_records_nothing(
    store: Store,
) -> None:
    batch = (await submit(store, "rb", specs(1))).batch
    jobs = await claim_all(store, batch.id, "w1")
    lapsed = remote_batch(batch.id, "w1", lease=-1.0)
    await store.open_remote_batch(lapsed, [start_of(jobs[0], "w1")])

    taken = await store.take_remote_batch("rb-test-1", "w2", lease_seconds=LEASE)

    assert taken is not None
    assert taken.worker_id == "w2"
    assert taken.lease_expires is not None
    assert taken.lease_expires > utcnow()
    assert await store.take_remote_batch("rb-test-1", "w3", lease_seconds=LEASE) is None
    # The stalled driver wakes up: none of its changes lands.
    assert not await advance(store, "rb-test-1", RemoteChange(step=RemoteStep.DONE), owner="w1")
    (rb,) = await store.remote_batches([batch.id])
    assert (rb.worker_id, rb.step) == ("w2", RemoteStep.PREPARING)


async def test_the_remote_batch_of_a_stopped_worker_is_free_at_once(store: Store) -> None:
    batch = (await submit(store, "rb", specs(1))).batch
    await store.register_worker("w1", "host", 1)
    jobs = await claim_all(store, batch.id, "w1")
    await store.open_remote_batch(remote_batch(batch.id, "w1"), [start_of(jobs[0], "w1")])
    await store.stop_worker("w1")

    taken = await store.take_remote_batch("rb-test-1", "w2", lease_seconds=LEASE)

    assert taken is not None
    assert taken.worker_id == "w2"


async def test_a_remote_batch_without_a_lease_is_judged_by_its_drivers_heartbeat(
    store: Store,
) -> None:
    """Opened before remote batches had a lease (a database upgraded to 0009): its driver,
    still heartbeating, keeps it; one whose heartbeat is older than the taker's lease does
    not."""
    batch = (await submit(store, "rb", specs(2))).batch
    await store.register_worker("w1", "host", 1)
    await store.register_worker("w3", "host", 3)
    one, two = await claim_all(store, batch.id, "w1")
    unleased = replace(remote_batch(batch.id, "w1"), lease_expires=None)
    await store.open_remote_batch(unleased, [start_of(one, "w1")])
    quiet = replace(remote_batch(batch.id, "w3", "rb-test-2"), lease_expires=None)
    await store.open_remote_batch(quiet, [start_of(two, "w1")])
    async with store.db.writing() as conn:
        await conn.execute(
            update(workers)
            .where(workers.c.id == "w3")
            .values(heartbeat_at=utcnow() - timedelta(seconds=2 * LEASE))
        )

    assert await store.take_remote_batch("rb-test-1", "w2", lease_seconds=LEASE) is None
    taken = await store.take_remote_batch("rb-test-2", "w2", lease_seconds=LEASE)

    assert taken is not None
    assert taken.worker_id == "w2"
    assert await advance(store, "rb-test-1", RemoteChange(status="in_progress"))
    owners = {rb.id: rb.worker_id for rb in await store.remote_batches([batch.id])}
    assert owners == {"rb-test-1": "w1", "rb-test-2": "w2"}


async def test_an_attempt_finished_twice_keeps_its_first_finish(store: Store) -> None:
    """A remote batch's line applied a second time (two drivers, or after a crash) records
    nothing: not its cost again, not its outputs, not its job's move."""
    batch = (await submit(store, "rb", specs(1))).batch
    jobs = await claim_all(store, batch.id, "w1")
    start = start_of(jobs[0], "w1")
    await store.open_remote_batch(remote_batch(batch.id, "w1"), [start])
    paid = result_of(start, Outcome.OK, expected_usd=0.02, charge=ChargeStatus.CHARGED)
    await store.complete(paid, [output_of(start, 0)])

    again = result_of(start, Outcome.SERVER_ERROR, expected_usd=0.0, charge=ChargeStatus.UNKNOWN)
    await store.retry_later(again, utcnow())
    await store.complete(replace(paid, expected_usd=0.04), [output_of(start, 0)])

    (row,) = await attempt_rows(store, jobs[0].id)
    assert (row.outcome, row.expected_usd, row.charge_status) == ("ok", 0.02, "charged")
    assert (await job_row(store, jobs[0].id)).state == JobState.SUCCEEDED.value
    async with store.db.reading() as conn:
        assert await conn.scalar(select(func.count()).select_from(outputs)) == 1


async def test_cancel_marks_every_unfinished_remote_batch(store: Store) -> None:
    batch = (await submit(store, "rb", specs(2))).batch
    jobs = await claim_all(store, batch.id, "w1")
    await store.open_remote_batch(remote_batch(batch.id, "w1", "rb-a"), [start_of(jobs[0], "w1")])
    await store.open_remote_batch(remote_batch(batch.id, "w1", "rb-b"), [start_of(jobs[1], "w1")])
    await advance(store, "rb-b", RemoteChange(step=RemoteStep.DONE))

    marked = await store.request_remote_cancel(batch.id)

    assert [rb.id for rb in marked] == ["rb-a"]
    assert all(rb.cancel_requested for rb in marked)
