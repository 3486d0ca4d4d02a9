"""Queue verbs: submit, claim, leases, recovery, requeue and cancel, on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import anyio
import asyncpg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from runner.errors import NotFound, StoreError, UsageError
from runner.models import AttemptState, ChargeStatus, Job, JobState, Outcome, utcnow
from runner.store import LeaseLost, Recovery, Store

from .factories import (
    LAPSED,
    LEASE,
    ROUTE,
    attempt_rows,
    claim_all,
    job_row,
    result_of,
    specs,
    start_of,
    submit,
)

pytestmark = pytest.mark.anyio


def ext_ids(claimed: list[Job]) -> list[str]:
    return [j.ext_id for j in claimed]


# -- submit -------------------------------------------------------------------------------


async def test_submit_creates_the_batch_and_queues_every_spec(store: Store) -> None:
    result = await submit(store, "portraits", specs(5), budget_usd=3.0)

    assert (result.added, result.existing, result.batch_created) == (5, 0, True)
    batch = await store.find_batch("portraits")
    assert batch == await store.find_batch(result.batch.id)
    assert (batch.name, batch.route, batch.job_count, batch.budget_usd) == (
        "portraits",
        ROUTE,
        5,
        3.0,
    )
    assert await store.count_states([batch.id]) == {JobState.QUEUED: 5}


async def test_resubmitting_the_same_specs_adds_nothing(store: Store) -> None:
    first = await submit(store, "portraits", specs(5))
    again = await submit(store, "portraits", specs(5))

    assert (again.added, again.existing, again.batch_created) == (0, 5, False)
    assert again.batch.id == first.batch.id
    assert again.batch.job_count == 5
    assert await store.count_states([first.batch.id]) == {JobState.QUEUED: 5}


async def test_resubmitting_a_grown_manifest_adds_only_the_new_lines(store: Store) -> None:
    await submit(store, "portraits", specs(5))
    grown = await submit(store, "portraits", specs(8))

    assert (grown.added, grown.existing) == (3, 5)
    assert grown.batch.job_count == 8


async def test_known_keys_under_another_name_create_nothing_and_name_their_batch(
    store: Store,
) -> None:
    first = await submit(store, "portraits", specs(4))
    other = await submit(store, "portraits-copy", specs(4))

    assert (other.added, other.existing, other.batch_created) == (0, 4, False)
    assert other.existing_batches == {first.batch.id: "portraits"}
    with pytest.raises(NotFound):
        await store.find_batch("portraits-copy")
    assert [b.name for b in await store.list_batches()] == ["portraits"]


async def test_submit_is_all_or_nothing_across_insert_chunks(store: Store) -> None:
    """A bad spec after thousands of good ones leaves neither the batch nor any job behind."""
    broken = specs(2_050)
    broken[-1] = replace(broken[-1], prompt=None)  # type: ignore[arg-type]  # NOT NULL

    with pytest.raises((IntegrityError, StoreError)):
        await submit(store, "big", broken)

    assert await store.list_batches() == []
    ok = await submit(store, "big", broken[:-1])
    assert ok.added == 2_049


async def test_adding_to_an_existing_batch_is_all_or_nothing(store: Store) -> None:
    first = await submit(store, "portraits", specs(3))
    grown = specs(6)
    grown[-1] = replace(grown[-1], prompt=None)  # type: ignore[arg-type]  # NOT NULL

    with pytest.raises((IntegrityError, StoreError)):
        await submit(store, "portraits", grown)

    assert (await store.find_batch("portraits")).job_count == 3
    assert await store.count_states([first.batch.id]) == {JobState.QUEUED: 3}


async def test_an_exact_submit_takes_a_new_batch_or_the_same_jobs_again(store: Store) -> None:
    first = await submit(store, "cmp", specs(4), exact=True)
    again = await submit(store, "cmp", specs(4), exact=True)

    assert (first.added, first.batch_created) == (4, True)
    assert (again.added, again.existing, again.batch.job_count) == (0, 4, 4)
    assert await store.batch_keys(first.batch.id) == {s.key for s in specs(4)}


@pytest.mark.parametrize(
    ("held", "sent"),
    [(2, 4), (4, 2), (3, 3)],
    ids=["batch-would-grow", "batch-holds-more", "other-jobs-same-count"],
)
async def test_an_exact_submit_that_would_mix_jobs_enqueues_nothing(
    store: Store, held: int, sent: int
) -> None:
    """A comparison's batch never ends up holding other jobs beside its own, or too few."""
    base = specs(held)
    theirs = specs(sent) if (held, sent) != (3, 3) else [replace(s, key=f"x{s.key}") for s in base]
    before = await submit(store, "cmp", base)

    with pytest.raises(UsageError, match="would not hold exactly"):
        await submit(store, "cmp", theirs, exact=True)

    assert (await store.find_batch("cmp")).job_count == held
    assert await store.batch_keys(before.batch.id) == {s.key for s in base}


async def test_an_exact_submit_refuses_jobs_queued_in_another_batch(store: Store) -> None:
    await submit(store, "portraits", specs(3))

    with pytest.raises(UsageError, match="some are jobs of portraits"):
        await submit(store, "cmp", specs(3), exact=True)

    assert [b.name for b in await store.list_batches()] == ["portraits"]


async def test_a_batch_name_is_refused_on_another_route(store: Store) -> None:
    first = await submit(store, "portraits", specs(2))

    with pytest.raises(UsageError, match="already exists on route"):
        await submit(store, "portraits", specs(4, prefix="more"), route="other-route")

    batch = await store.find_batch("portraits")
    assert (batch.route, batch.job_count) == (ROUTE, 2)
    assert await store.count_states([first.batch.id]) == {JobState.QUEUED: 2}


async def test_concurrent_submits_of_different_batches_all_land(store: Store) -> None:
    """Writers racing on one database wait for each other instead of failing."""
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for n in range(6):
                tg.start_soon(submit, store, f"batch-{n}", specs(300, prefix=f"b{n}"))

    batches = await store.list_batches()
    assert sorted(b.name for b in batches) == [f"batch-{n}" for n in range(6)]
    assert await store.count_states([b.id for b in batches]) == {JobState.QUEUED: 1_800}


# -- claim --------------------------------------------------------------------------------


async def test_claim_leases_at_most_limit_jobs_in_id_order(store: Store) -> None:
    batch = (await submit(store, "portraits", specs(10))).batch

    rounds = [
        await store.claim(worker_id="w1", batch_ids=[batch.id], limit=4, lease_seconds=LEASE)
        for _ in range(4)
    ]

    assert [ext_ids(r) for r in rounds] == [
        ["job-1", "job-2", "job-3", "job-4"],
        ["job-5", "job-6", "job-7", "job-8"],
        ["job-9", "job-10"],
        [],
    ]
    first = rounds[0][0]
    assert (first.route, first.prompt, first.params, first.attempts) == (
        ROUTE,
        "a lighthouse at dusk, study 1",
        {"size": "1024x1024", "quality": "low"},
        0,
    )
    assert await store.count_states([batch.id]) == {JobState.RUNNING: 10}


async def test_claim_takes_jobs_only_from_the_named_batches(store: Store) -> None:
    await submit(store, "first", specs(3, prefix="a"))
    second = (await submit(store, "second", specs(2, prefix="b"))).batch

    claimed = await claim_all(store, second.id, "w1")

    assert ext_ids(claimed) == ["b-1", "b-2"]
    assert {j.batch_id for j in claimed} == {second.id}


async def test_concurrent_claimers_never_get_the_same_job(db_url: str) -> None:
    """Six claimers over two connections pools race through one batch; each job goes once."""
    stores = [await Store.open(db_url), await Store.open(db_url, migrate=False)]
    try:
        batch = (await submit(stores[0], "race", specs(90))).batch
        taken: dict[str, list[list[int]]] = {}

        async def claimer(store: Store, worker: str) -> None:
            rounds = taken.setdefault(worker, [])
            while claimed := await store.claim(
                worker_id=worker, batch_ids=[batch.id], limit=4, lease_seconds=LEASE
            ):
                rounds.append([j.id for j in claimed])

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for n in range(6):
                    tg.start_soon(claimer, stores[n % 2], f"w{n}")
    finally:
        for s in stores:
            await s.close()

    every = [job_id for rounds in taken.values() for ids in rounds for job_id in ids]
    assert len(every) == len(set(every)) == 90
    assert all(ids == sorted(ids) and len(ids) <= 4 for r in taken.values() for ids in r)


async def test_postgres_claim_skips_rows_another_claimer_holds(pg_url: str) -> None:
    """FOR UPDATE SKIP LOCKED: a claim passes over locked rows instead of queueing behind them."""
    store = await Store.open(pg_url)
    dsn = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    holder = await asyncpg.connect(dsn)
    try:
        batch = (await submit(store, "locked", specs(6))).batch
        async with holder.transaction():
            await holder.execute("SELECT id FROM jobs ORDER BY id LIMIT 2 FOR UPDATE")
            with anyio.fail_after(10):
                around = await claim_all(store, batch.id, "w1")
        with anyio.fail_after(10):
            after = await claim_all(store, batch.id, "w2")
    finally:
        await holder.close()
        await store.close()

    assert ext_ids(around) == ["job-3", "job-4", "job-5", "job-6"]
    assert ext_ids(after) == ["job-1", "job-2"]


async def test_a_waiting_job_is_claimable_only_once_due(store: Store) -> None:
    batch = (await submit(store, "waits", specs(2))).batch
    later, due = await claim_all(store, batch.id, "w1")
    retry_at = utcnow() + timedelta(hours=1)
    for job, at in ((later, retry_at), (due, utcnow() - timedelta(seconds=1))):
        start = start_of(job, "w1")
        await store.start_attempt(start)
        await store.retry_later(result_of(start, Outcome.SERVER_ERROR), at)

    assert ext_ids(await claim_all(store, batch.id, "w2")) == ["job-2"]
    assert await claim_all(store, batch.id, "w2") == []
    assert await store.next_due([batch.id]) == retry_at
    assert await store.count_states([batch.id]) == {JobState.WAITING: 1, JobState.RUNNING: 1}


async def test_claim_takes_due_retries_and_queued_jobs_oldest_first(store: Store) -> None:
    batch = (await submit(store, "merged", specs(4))).batch
    _, second = await store.claim(
        worker_id="w1", batch_ids=[batch.id], limit=2, lease_seconds=LEASE
    )
    start = start_of(second, "w1")
    await store.start_attempt(start)
    await store.retry_later(result_of(start, Outcome.SERVER_ERROR), utcnow())

    claimed = await store.claim(worker_id="w2", batch_ids=[batch.id], limit=2, lease_seconds=LEASE)

    assert ext_ids(claimed) == ["job-2", "job-3"]


async def test_any_live_is_false_only_when_every_job_has_finished(store: Store) -> None:
    batch = (await submit(store, "live", specs(2))).batch
    assert await store.any_live([batch.id])

    await store.cancel(batch.id)

    assert not await store.any_live([batch.id])
    assert await store.count_states([batch.id], [JobState.CANCELLED]) == {JobState.CANCELLED: 2}
    assert await store.count_states([batch.id], [JobState.QUEUED]) == {}


# -- leases and recovery --------------------------------------------------------------------


async def test_heartbeat_extends_only_the_owners_leases(store: Store) -> None:
    batch = (await submit(store, "leases", specs(3))).batch
    mine = await store.claim(worker_id="w1", batch_ids=[batch.id], limit=2, lease_seconds=LAPSED)
    theirs = await claim_all(store, batch.id, "w2", lease=LAPSED)

    held = await store.heartbeat("w1", [j.id for j in mine + theirs], LEASE)
    recovery = await store.recover_expired()

    assert held == 2
    assert recovery == Recovery(requeued=1)
    assert [j.id for j in await claim_all(store, batch.id, "w3")] == [theirs[0].id]


async def test_heartbeat_reports_leases_already_lost(store: Store) -> None:
    batch = (await submit(store, "leases", specs(2))).batch
    claimed = await claim_all(store, batch.id, "w1", lease=LAPSED)
    await store.recover_expired()

    assert await store.heartbeat("w1", [j.id for j in claimed], LEASE) == 0


async def test_recovery_requeues_an_expired_job_that_never_sent(store: Store) -> None:
    batch = (await submit(store, "recover", specs(2))).batch
    [expired] = await store.claim(
        worker_id="w1", batch_ids=[batch.id], limit=1, lease_seconds=LAPSED
    )
    [alive] = await claim_all(store, batch.id, "w2")

    recovery = await store.recover_expired()

    assert recovery == Recovery(requeued=1)
    row = await job_row(store, expired.id)
    assert (row.state, row.lease_owner, row.lease_expires) == (JobState.QUEUED, None, None)
    assert (await job_row(store, alive.id)).state == JobState.RUNNING
    assert [j.id for j in await claim_all(store, batch.id, "w3")] == [expired.id]


async def test_recovery_holds_a_job_whose_request_may_have_left_as_unknown(store: Store) -> None:
    batch = (await submit(store, "recover", specs(1))).batch
    [job] = await claim_all(store, batch.id, "w1", lease=LAPSED)
    start = start_of(job, "w1")
    await store.start_attempt(start)

    recovery = await store.recover_expired()

    assert recovery == Recovery(unknown=1)
    [attempt] = await attempt_rows(store, job.id)
    assert (attempt.state, attempt.outcome, attempt.charge_status) == (
        AttemptState.DONE,
        Outcome.LOST,
        ChargeStatus.UNKNOWN,
    )
    assert attempt.finished_at is not None
    row = await job_row(store, job.id)
    assert (row.state, row.last_outcome, row.lease_owner) == (JobState.UNKNOWN, Outcome.LOST, None)
    assert await claim_all(store, batch.id, "w2") == [], "an unknown job is never re-sent"
    with pytest.raises(LeaseLost):
        await store.start_attempt(start_of(job, "w1"))


async def test_recovery_requeues_a_lost_request_on_a_resend_route(store: Store) -> None:
    batch = (await submit(store, "recover", specs(1))).batch
    [job] = await claim_all(store, batch.id, "w1", lease=LAPSED)
    await store.start_attempt(start_of(job, "w1"))

    recovery = await store.recover_expired(resend_routes=frozenset({ROUTE}))

    assert recovery == Recovery(resent=1)
    [again] = await claim_all(store, batch.id, "w2")
    await store.start_attempt(start_of(again, "w2"))
    lost, second = await attempt_rows(store, job.id)
    assert (lost.outcome, lost.charge_status) == (Outcome.LOST, ChargeStatus.UNKNOWN)
    assert (second.number, second.state) == (2, AttemptState.SENDING)


async def test_recovery_leaves_other_routes_held_when_one_route_resends(store: Store) -> None:
    resend = (await submit(store, "resend", specs(1, prefix="r"))).batch
    hold = (await submit(store, "hold", specs(1, prefix="h"), route="other-route")).batch
    for batch in (resend, hold):
        [job] = await claim_all(store, batch.id, "w1", lease=LAPSED)
        await store.start_attempt(start_of(job, "w1"))

    recovery = await store.recover_expired(resend_routes=frozenset({ROUTE}))

    assert recovery == Recovery(unknown=1, resent=1)
    assert await store.count_states([resend.id]) == {JobState.QUEUED: 1}
    assert await store.count_states([hold.id]) == {JobState.UNKNOWN: 1}


# -- requeue and cancel ---------------------------------------------------------------------


async def _batch_in_every_state(store: Store) -> str:
    """One job each: queued, running, waiting, succeeded, failed, unknown."""
    batch = (await submit(store, "mixed", specs(6))).batch
    queued, _running, waiting, succeeded, failed, unknown = await claim_all(store, batch.id, "w1")
    await store.release(None, queued.id, JobState.QUEUED)
    for job, finish in ((waiting, "wait"), (succeeded, "ok"), (failed, "fail")):
        start = start_of(job, "w1")
        await store.start_attempt(start)
        if finish == "wait":
            await store.retry_later(result_of(start, Outcome.TIMEOUT), utcnow() + timedelta(days=1))
        elif finish == "ok":
            await store.complete(result_of(start, Outcome.OK), [])
        else:
            await store.fail(result_of(start, Outcome.INVALID_REQUEST))
    await store.heartbeat("w1", [unknown.id], LAPSED)
    await store.start_attempt(start_of(unknown, "w1"))
    assert await store.recover_expired() == Recovery(unknown=1)
    return batch.id


async def test_requeue_puts_back_only_the_named_states(store: Store) -> None:
    batch_id = await _batch_in_every_state(store)

    assert await store.requeue(batch_id, [JobState.FAILED, JobState.UNKNOWN]) == 2

    assert await store.count_states([batch_id]) == {
        JobState.QUEUED: 3,
        JobState.RUNNING: 1,
        JobState.WAITING: 1,
        JobState.SUCCEEDED: 1,
    }
    assert ext_ids(await claim_all(store, batch_id, "w2")) == ["job-1", "job-5", "job-6"]


async def test_cancel_stops_every_job_not_running_or_finished(store: Store) -> None:
    batch_id = await _batch_in_every_state(store)

    assert await store.cancel(batch_id) == 3

    assert await store.count_states([batch_id]) == {
        JobState.CANCELLED: 3,
        JobState.RUNNING: 1,
        JobState.SUCCEEDED: 1,
        JobState.FAILED: 1,
    }
    assert await claim_all(store, batch_id, "w2") == []
