"""Remote batch verbs, on SQLite and PostgreSQL: a remote batch's lines from their ledger rows
to settled, and the jobs in it out of reach of dead-worker recovery."""

from __future__ import annotations

from dataclasses import replace

import pytest

from runner.models import AttemptState, JobState, Outcome, RemoteStep, utcnow
from runner.store import RemoteBatch, RemoteChange, Store

from .factories import LAPSED, attempt_rows, claim_all, job_row, result_of, specs, start_of, submit

pytestmark = pytest.mark.anyio


def remote_batch(batch_id: str, worker: str, rb_id: str = "rb-test-1") -> RemoteBatch:
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
    )


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

    await store.advance_remote_batch(
        "rb-test-1", RemoteChange(step=RemoteStep.UPLOADED, input_file_id="file-1", bytes=99)
    )
    await store.advance_remote_batch(
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
    await store.advance_remote_batch("rb-test-1", RemoteChange(step=RemoteStep.DONE))
    assert await store.remote_batches([batch.id], unfinished_only=True) == []


async def test_a_live_driver_keeps_its_remote_batch(store: Store) -> None:
    batch = (await submit(store, "rb", specs(1))).batch
    jobs = await claim_all(store, batch.id, "w1")
    await store.open_remote_batch(remote_batch(batch.id, "w1"), [start_of(jobs[0], "w1")])

    assert await store.take_remote_batch("rb-test-1", "w2", live_workers={"w1", "w2"}) is None
    taken = await store.take_remote_batch("rb-test-1", "w2", live_workers={"w2"})

    assert taken is not None
    assert taken.worker_id == "w2"
    assert await store.take_remote_batch("rb-test-1", "w3", live_workers={"w2"}) is None


async def test_cancel_marks_every_unfinished_remote_batch(store: Store) -> None:
    batch = (await submit(store, "rb", specs(2))).batch
    jobs = await claim_all(store, batch.id, "w1")
    await store.open_remote_batch(remote_batch(batch.id, "w1", "rb-a"), [start_of(jobs[0], "w1")])
    await store.open_remote_batch(remote_batch(batch.id, "w1", "rb-b"), [start_of(jobs[1], "w1")])
    await store.advance_remote_batch("rb-b", RemoteChange(step=RemoteStep.DONE))

    marked = await store.request_remote_cancel(batch.id)

    assert [rb.id for rb in marked] == ["rb-a"]
    assert all(rb.cancel_requested for rb in marked)
