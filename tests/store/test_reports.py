"""Reports: batch status (states, outputs, attempts, spend, failure classes) and budget exposure.

The batch below, attempt by attempt (worst case $0.25 each unless noted):

===  =========================================  ==========  =========  ========  =========
job  attempts                                   charge      expected   observed  job state
===  =========================================  ==========  =========  ========  =========
1    ok, 2 images                               charged     0.040      0.050     succeeded
2    rate_limited, then ok                      not, chgd   0.0, 0.04  -         succeeded
3    server_error                               unknown     0.030      -         failed
4    invalid_request                            not         0.0        -         failed
5    sending (worst case 0.20)                  unknown     -          -         running
6    (none)                                                                      queued
===  =========================================  ==========  =========  ========  =========

Spent: 0.05 + 0.04 = 0.09. Unknown: 0.03. Exposure: 0.09 + 0.03 + 0.20 = 0.32.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from runner.models import ChargeStatus, JobState, Outcome, utcnow
from runner.store import BatchInfo, Recovery, Store
from runner.store.tables import attempts

from .factories import LAPSED, claim_all, output_of, result_of, specs, start_of, submit

pytestmark = pytest.mark.anyio


async def set_observed(store: Store, attempt_id: str, usd: float) -> None:
    # No verb writes observed_usd yet (billing reconciliation will); set it as it would.
    async with store.engine.begin() as conn:
        await conn.execute(
            update(attempts).where(attempts.c.id == attempt_id).values(observed_usd=usd)
        )


async def mixed_batch(store: Store, name: str = "report") -> BatchInfo:
    batch = (await submit(store, name, specs(6, prefix=name))).batch
    j1, j2, j3, j4, j5 = await store.claim(
        worker_id="w1", batch_ids=[batch.id], limit=5, lease_seconds=600
    )

    s1 = start_of(j1, "w1")
    await store.start_attempt(s1)
    await store.complete(
        result_of(s1, Outcome.OK, expected_usd=0.04, charge=ChargeStatus.CHARGED),
        [output_of(s1, 0), output_of(s1, 1)],
    )
    await set_observed(store, s1.id, 0.05)

    s2 = start_of(j2, "w1")
    await store.start_attempt(s2)
    limited = result_of(s2, Outcome.RATE_LIMITED, expected_usd=0.0, charge=ChargeStatus.NOT_CHARGED)
    await store.retry_later(limited, utcnow() - timedelta(seconds=1))
    [j2] = await store.claim(worker_id="w1", batch_ids=[batch.id], limit=1, lease_seconds=600)
    s2 = start_of(j2, "w1")
    await store.start_attempt(s2)
    await store.complete(
        result_of(s2, Outcome.OK, expected_usd=0.04, charge=ChargeStatus.CHARGED),
        [output_of(s2, 0)],
    )

    s3 = start_of(j3, "w1")
    await store.start_attempt(s3)
    await store.fail(result_of(s3, Outcome.SERVER_ERROR, expected_usd=0.03))

    s4 = start_of(j4, "w1")
    await store.start_attempt(s4)
    await store.fail(
        result_of(s4, Outcome.INVALID_REQUEST, expected_usd=0.0, charge=ChargeStatus.NOT_CHARGED)
    )

    await store.start_attempt(start_of(j5, "w1", worst_case_usd=0.20))
    return batch


async def test_batch_status_counts_states_outputs_attempts_and_failures(store: Store) -> None:
    batch = await mixed_batch(store)

    [status] = await store.batch_status([batch])

    assert status.counts == {
        JobState.SUCCEEDED: 2,
        JobState.FAILED: 2,
        JobState.RUNNING: 1,
        JobState.QUEUED: 1,
    }
    assert (status.total, status.runnable, status.outputs, status.attempts) == (6, 1, 3, 6)
    assert status.failures == {"server_error": 1, "invalid_request": 1}
    assert status.attempt_failures == {
        "rate_limited": 1,
        "server_error": 1,
        "invalid_request": 1,
        "sending": 1,
    }


async def test_spend_uses_the_observed_cost_over_the_expected_one(store: Store) -> None:
    batch = await mixed_batch(store)

    [status] = await store.batch_status([batch])

    assert status.spent_usd == pytest.approx(0.09)
    assert status.unknown_charges_usd == pytest.approx(0.03)
    assert status.to_json()["spent_usd"] == pytest.approx(0.09)


async def test_exposure_counts_in_flight_attempts_at_their_worst_case(store: Store) -> None:
    batch = await mixed_batch(store)

    assert await store.exposure_usd([batch.id]) == pytest.approx(0.32)


async def test_a_lost_attempt_still_counts_against_the_budget(store: Store) -> None:
    """Recovery closes a dead worker's request as lost; it may have been charged in full."""
    batch = (await submit(store, "lost", specs(1))).batch
    [job] = await claim_all(store, batch.id, "w1", lease=LAPSED)
    await store.start_attempt(start_of(job, "w1", worst_case_usd=0.20))
    before = await store.exposure_usd([batch.id])

    assert await store.recover_expired() == Recovery(unknown=1)

    assert before == pytest.approx(0.20)
    assert await store.exposure_usd([batch.id]) == pytest.approx(0.20)
    [status] = await store.batch_status([batch])
    assert status.spent_usd == 0.0
    assert status.unknown_charges_usd == pytest.approx(0.20)
    assert status.failures == {"lost": 1}


async def test_reports_keep_batches_apart(store: Store) -> None:
    first = await mixed_batch(store, "first")
    second = await mixed_batch(store, "second")
    empty = (await submit(store, "empty", specs(2, prefix="empty"))).batch

    statuses = await store.batch_status([first, second, empty])

    assert [s.batch.name for s in statuses] == ["first", "second", "empty"]
    assert [s.spent_usd for s in statuses] == [pytest.approx(0.09)] * 2 + [0.0]
    assert (statuses[2].attempts, statuses[2].outputs, statuses[2].failures) == (0, 0, {})
    assert await store.exposure_usd([first.id, second.id]) == pytest.approx(0.64)
    assert await store.exposure_usd([empty.id]) == 0.0
