"""Ledger verbs: the attempt row goes in before the request leaves; finishing is atomic."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from runner.errors import StoreError
from runner.models import AttemptState, ChargeStatus, Job, JobState, Outcome, utcnow
from runner.store import LeaseLost, Recovery, Store
from runner.store.tables import attempts, outputs

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


async def one_claimed(store: Store, *, lease: float = 600.0) -> Job:
    batch = (await submit(store, "ledger", specs(1))).batch
    [job] = await claim_all(store, batch.id, "w1", lease=lease)
    return job


async def test_start_attempt_commits_a_sending_row_before_the_request_leaves(
    store: Store, db_url: str
) -> None:
    job = await one_claimed(store)
    start = start_of(job, "w1", worst_case_usd=0.19)

    await store.start_attempt(start)

    # Another connection pool (think: another process) already sees it.
    observer = await Store.open(db_url, migrate=False)
    try:
        [attempt] = await attempt_rows(observer, job.id)
        assert await observer.exposure_usd([job.batch_id]) == pytest.approx(0.19)
    finally:
        await observer.close()
    assert (attempt.id, attempt.number, attempt.state, attempt.outcome) == (
        start.id,
        1,
        AttemptState.SENDING,
        None,
    )
    assert (attempt.worker_id, attempt.charge_status, attempt.params) == (
        "w1",
        ChargeStatus.UNKNOWN,
        start.params,
    )
    assert attempt.started_at == start.started_at
    row = await job_row(store, job.id)
    assert (row.state, row.attempts, row.first_attempt_at) == (
        JobState.RUNNING,
        1,
        start.started_at,
    )


async def test_attempts_are_numbered_across_retries(store: Store) -> None:
    job = await one_claimed(store)
    first = start_of(job, "w1")
    await store.start_attempt(first)
    await store.retry_later(result_of(first, Outcome.TIMEOUT), utcnow() - timedelta(seconds=1))

    [again] = await claim_all(store, job.batch_id, "w2")
    second = start_of(again, "w2")
    await store.start_attempt(second)

    assert (again.attempts, again.first_attempt_at) == (1, first.started_at)
    assert [(a.id, a.number) for a in await attempt_rows(store, job.id)] == [
        (first.id, 1),
        (second.id, 2),
    ]
    assert (await job_row(store, job.id)).first_attempt_at == first.started_at


async def test_start_attempt_refuses_a_lease_that_was_taken_back(store: Store) -> None:
    job = await one_claimed(store, lease=LAPSED)
    assert await store.recover_expired() == Recovery(requeued=1)
    [reclaimed] = await claim_all(store, job.batch_id, "w2")

    with pytest.raises(LeaseLost):
        await store.start_attempt(start_of(job, "w1"))

    assert await attempt_rows(store, job.id) == []
    await store.start_attempt(start_of(reclaimed, "w2"))
    assert [a.worker_id for a in await attempt_rows(store, job.id)] == ["w2"]


async def test_start_attempt_refuses_a_job_leased_to_someone_else(store: Store) -> None:
    job = await one_claimed(store)

    with pytest.raises(LeaseLost):
        await store.start_attempt(start_of(job, "intruder"))

    assert (await job_row(store, job.id)).attempts == 0


async def test_complete_records_the_outputs_and_finishes_attempt_and_job(store: Store) -> None:
    job = await one_claimed(store)
    start = start_of(job, "w1")
    await store.start_attempt(start)
    result = result_of(
        start,
        Outcome.OK,
        expected_usd=0.042,
        charge=ChargeStatus.CHARGED,
        http_status=200,
        provider_request_id="req_provider_1",
        usage={"input_text_tokens": 12, "output_image_tokens": 4160},
        images_returned=2,
    )

    await store.complete(result, [output_of(start, 0), output_of(start, 1)])

    [attempt] = await attempt_rows(store, job.id)
    assert (attempt.state, attempt.outcome, attempt.http_status) == (
        AttemptState.DONE,
        Outcome.OK,
        200,
    )
    assert (attempt.provider_request_id, attempt.usage, attempt.images_returned) == (
        "req_provider_1",
        {"input_text_tokens": 12, "output_image_tokens": 4160},
        2,
    )
    assert (attempt.expected_usd, attempt.charge_status, attempt.finished_at) == (
        0.042,
        ChargeStatus.CHARGED,
        result.finished_at,
    )
    row = await job_row(store, job.id)
    assert (row.state, row.last_outcome, row.lease_owner, row.finished_at) == (
        JobState.SUCCEEDED,
        Outcome.OK,
        None,
        result.finished_at,
    )
    async with store.db.reading() as conn:
        saved = (await conn.execute(select(outputs).order_by(outputs.c.k))).all()
    assert [(o.attempt_id, o.k, o.path) for o in saved] == [
        (start.id, 0, f"out/{job.id}-0.png"),
        (start.id, 1, f"out/{job.id}-1.png"),
    ]


async def test_complete_is_all_or_nothing(store: Store) -> None:
    """When recording an output fails, the attempt stays sending and the job stays leased."""
    job = await one_claimed(store)
    start = start_of(job, "w1")
    await store.start_attempt(start)
    clash = [output_of(start, 0), output_of(start, 0)]

    with pytest.raises((IntegrityError, StoreError)):
        await store.complete(result_of(start, Outcome.OK), clash)

    [attempt] = await attempt_rows(store, job.id)
    assert (attempt.state, attempt.outcome) == (AttemptState.SENDING, None)
    row = await job_row(store, job.id)
    assert (row.state, row.lease_owner) == (JobState.RUNNING, "w1")
    status = (await store.batch_status([await store.find_batch(job.batch_id)]))[0]
    assert status.outputs == 0


async def test_retry_later_finishes_the_attempt_and_parks_the_job(store: Store) -> None:
    job = await one_claimed(store)
    start = start_of(job, "w1")
    await store.start_attempt(start)
    at = utcnow() + timedelta(seconds=30)
    result = result_of(
        start,
        Outcome.RATE_LIMITED,
        charge=ChargeStatus.NOT_CHARGED,
        expected_usd=0.0,
        http_status=429,
        error_code="rate_limit_exceeded",
        error_message="Rate limit reached",
        retry_after=30.0,
    )

    await store.retry_later(result, at)

    [attempt] = await attempt_rows(store, job.id)
    assert (attempt.state, attempt.outcome, attempt.retry_after, attempt.error_code) == (
        AttemptState.DONE,
        Outcome.RATE_LIMITED,
        30.0,
        "rate_limit_exceeded",
    )
    row = await job_row(store, job.id)
    assert (row.state, row.next_at, row.lease_owner, row.finished_at) == (
        JobState.WAITING,
        at,
        None,
        None,
    )
    assert (row.last_outcome, row.last_error) == (Outcome.RATE_LIMITED, "Rate limit reached")
    assert await store.next_due([job.batch_id]) == at


async def test_rate_limits_are_kept_on_the_attempt_and_none_is_sql_null(store: Store) -> None:
    """The limits an answer reported are on its attempt's row; an answer that reported none
    leaves the column NULL (not JSON ``null``), so ``WHERE rate_limits IS NULL`` finds it."""
    jobs = await claim_all(store, (await submit(store, "limits", specs(2))).batch.id, "w1")
    limits = {"requests": {"limit": 500, "remaining": 0, "reset_s": 0.12}}
    for job, reported in zip(jobs, (limits, None), strict=True):
        start = start_of(job, "w1")
        await store.start_attempt(start)
        result = result_of(start, Outcome.RATE_LIMITED, http_status=429, rate_limits=reported)
        await store.retry_later(result, utcnow())
    [with_limits], [without] = [await attempt_rows(store, job.id) for job in jobs]
    assert with_limits.rate_limits == limits
    async with store.db.reading() as conn:
        null = select(attempts.c.job_id).where(attempts.c.rate_limits.is_(None))
        assert list((await conn.execute(null)).scalars()) == [without.job_id]


async def test_fail_finishes_the_attempt_and_fails_the_job(store: Store) -> None:
    job = await one_claimed(store)
    start = start_of(job, "w1")
    await store.start_attempt(start)
    result = result_of(
        start,
        Outcome.MODERATION_BLOCKED,
        charge=ChargeStatus.NOT_CHARGED,
        http_status=400,
        error_type="image_generation_user_error",
        error_code="moderation_blocked",
        error_message="Your request was rejected by the safety system.",
    )

    await store.fail(result)

    [attempt] = await attempt_rows(store, job.id)
    assert (attempt.state, attempt.outcome, attempt.error_type) == (
        AttemptState.DONE,
        Outcome.MODERATION_BLOCKED,
        "image_generation_user_error",
    )
    row = await job_row(store, job.id)
    assert (row.state, row.finished_at, row.lease_owner) == (
        JobState.FAILED,
        result.finished_at,
        None,
    )
    assert await claim_all(store, job.batch_id, "w2") == []


async def test_release_with_an_attempt_closes_it_and_returns_the_job(store: Store) -> None:
    job = await one_claimed(store)
    start = start_of(job, "w1")
    await store.start_attempt(start)

    await store.release(
        result_of(start, Outcome.INTERRUPTED, error_message="run stopped while in flight"),
        job.id,
        JobState.QUEUED,
    )

    [attempt] = await attempt_rows(store, job.id)
    assert (attempt.state, attempt.outcome) == (AttemptState.DONE, Outcome.INTERRUPTED)
    row = await job_row(store, job.id)
    assert (row.state, row.last_outcome, row.lease_owner) == (
        JobState.QUEUED,
        Outcome.INTERRUPTED,
        None,
    )
    assert [j.id for j in await claim_all(store, job.batch_id, "w2")] == [job.id]


async def test_release_without_an_attempt_just_returns_the_job(store: Store) -> None:
    job = await one_claimed(store)

    await store.release(None, job.id, JobState.QUEUED)

    row = await job_row(store, job.id)
    assert (row.state, row.attempts, row.last_outcome) == (JobState.QUEUED, 0, None)
    assert await attempt_rows(store, job.id) == []


async def test_fail_unsent_fails_the_job_without_an_attempt(store: Store) -> None:
    job = await one_claimed(store)

    await store.fail_unsent(job.id, Outcome.INVALID_REQUEST.value, "source image unreadable")

    assert await attempt_rows(store, job.id) == []
    row = await job_row(store, job.id)
    assert (row.state, row.last_outcome, row.last_error, row.lease_owner) == (
        JobState.FAILED,
        Outcome.INVALID_REQUEST,
        "source image unreadable",
        None,
    )
    assert row.finished_at is not None
    [status] = await store.batch_status([await store.find_batch(job.batch_id)])
    assert (status.failures, status.attempts) == ({"invalid_request": 1}, 0)


async def test_release_unstarted_returns_only_our_jobs_that_never_sent(store: Store) -> None:
    batch = (await submit(store, "stop", specs(4))).batch
    idle, sent = await store.claim(
        worker_id="w1", batch_ids=[batch.id], limit=2, lease_seconds=LAPSED
    )
    others = await claim_all(store, batch.id, "w2")
    await store.start_attempt(start_of(sent, "w1"))

    released = await store.release_unstarted("w1", [idle.id, sent.id, *(j.id for j in others)])

    assert released == 1
    assert (await job_row(store, idle.id)).state == JobState.QUEUED
    assert {(await job_row(store, j.id)).lease_owner for j in others} == {"w2"}
    # The job whose request may have left is judged by recovery, never silently re-queued.
    assert await store.recover_expired() == Recovery(unknown=1)
    assert (await job_row(store, sent.id)).state == JobState.UNKNOWN
