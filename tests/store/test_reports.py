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

import dataclasses
import re
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, update

from runner.models import ChargeStatus, JobState, Outcome, utcnow
from runner.store import BatchInfo, OutputRecord, Recovery, Store
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


async def test_a_batch_of_most_jobs_counts_the_same_beside_other_batches(store: Store) -> None:
    """On SQLite the rows of a batch holding most of the jobs are counted as the table's less
    the other batches' (see ``runner.store.reports``): asked for alone or with the others,
    before or after them in id order, every batch's figures are its own."""
    small = [await finished_with(store, f"small{i}", [None]) for i in range(3)]
    big = await mixed_batch(store, "big")

    for asked in ([big], [*small, big], [small[0], big]):
        statuses = {s.batch.name: s for s in await store.batch_status(asked)}

        status = statuses.pop("big")
        assert status.counts == {
            JobState.SUCCEEDED: 2,
            JobState.FAILED: 2,
            JobState.RUNNING: 1,
            JobState.QUEUED: 1,
        }
        assert (status.total, status.outputs, status.attempts) == (6, 3, 6)
        assert status.spent_usd == pytest.approx(0.09)
        for other in statuses.values():
            assert other.counts == {JobState.SUCCEEDED: 1}
            assert (other.outputs, other.attempts) == (1, 1)


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


async def test_failure_classes_stay_with_their_batch(store: Store) -> None:
    """Attempts that are not ``ok`` are counted per batch, and a clean batch shows none."""
    mixed = await mixed_batch(store, "mixed")
    clean = (await submit(store, "clean", specs(2, prefix="clean"))).batch
    for job in await claim_all(store, clean.id, "w2"):
        start = start_of(job, "w2")
        await store.start_attempt(start)
        await store.complete(
            result_of(start, Outcome.OK, expected_usd=0.04, charge=ChargeStatus.CHARGED),
            [output_of(start, 0)],
        )

    asked_for_one = await store.batch_status([clean])
    both = await store.batch_status([mixed, clean])

    assert asked_for_one[0].attempt_failures == {} == both[1].attempt_failures
    assert (both[1].attempts, both[1].outputs, both[1].spent_usd) == (2, 2, pytest.approx(0.08))
    assert both[0].attempt_failures == {
        "rate_limited": 1,
        "server_error": 1,
        "invalid_request": 1,
        "sending": 1,
    }


async def finished_with(store: Store, name: str, asked: list[str | None]) -> BatchInfo:
    """A batch of ``len(asked)`` jobs, one output each; ``asked[i]`` set means that output
    is not what job ``i`` asked for (it is ``96x64`` instead)."""
    batch = (await submit(store, name, specs(len(asked), prefix=name))).batch
    for job, wanted in zip(await claim_all(store, batch.id, "w1"), asked, strict=True):
        start = start_of(job, "w1")
        await store.start_attempt(start)
        got = "96x64" if wanted else None
        output: OutputRecord = dataclasses.replace(output_of(start, 0), asked=wanted, got=got)
        await store.complete(
            result_of(start, Outcome.OK, expected_usd=0.04, charge=ChargeStatus.CHARGED), [output]
        )
    return batch


async def score(store: Store, batch: BatchInfo, flags: list[str | None]) -> None:
    """Record each output's edit flag in job order, as an export that scored them does."""
    rows = [row async for page in store.iter_outputs(batch.id) for row in page]
    rows.sort(key=lambda r: r.job_id)
    await store.record_fidelity(
        [
            dataclasses.replace(r, edit_fidelity=0.5, edit_flag=flag)
            for r, flag in zip(rows, flags, strict=True)
        ]
    )


async def test_status_counts_mismatched_outputs_and_flagged_edits_batch_by_batch(
    store: Store,
) -> None:
    """Only ``ignored_source`` and ``unchanged`` are flagged: ``ok`` and unscored are not."""
    first = await finished_with(store, "first", ["1024x1024", None, "1536x1024", None, None])
    await score(store, first, ["ignored_source", "ok", "unchanged", None, "unchanged"])
    second = await finished_with(store, "second", [None, "1024x1024", None])
    await score(store, second, ["ok", "ok", "ignored_source"])
    third = await finished_with(store, "third", [None, None])

    statuses = await store.batch_status([first, second, third])

    counted = [(s.outputs, s.mismatched, s.flagged_edits) for s in statuses]
    assert counted == [(5, 2, 3), (3, 1, 1), (2, 0, 0)]
    # The export reads every row of the same outputs: the two agree.
    for status in statuses:
        rows = [row async for page in store.iter_outputs(status.batch.id) for row in page]
        assert status.mismatched == sum(1 for r in rows if r.asked is not None)
        assert status.flagged_edits == sum(1 for r in rows if r.edit_flag not in (None, "ok"))


async def test_on_sqlite_status_reads_only_indexes(sqlite_url: str) -> None:
    """What keeps ``status`` under a second on a million attempts: no statement reads table
    rows; the sums come from the covering spend index, the rest from (partial) indexes."""
    store = await Store.open(sqlite_url)
    try:
        batch = await mixed_batch(store)
        statements: list[tuple[str, Any]] = []

        def seen(_conn: Any, _cursor: Any, sql: str, params: Any, *_: Any) -> None:
            if sql.startswith("SELECT"):
                statements.append((sql, params))

        event.listen(store.engine.sync_engine, "before_cursor_execute", seen)
        await store.batch_status([batch])
        event.remove(store.engine.sync_engine, "before_cursor_execute", seen)
        async with store.db.reading() as conn:
            plans = [
                " / ".join(r[3] for r in await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", p))
                for sql, p in statements
            ]
    finally:
        await store.close()

    # Jobs: by state (one subquery per state) and failures; outputs: three counts in one;
    # attempts: the count and sums in one, and the failures.
    assert len(plans) == 5
    assert all("USING COVERING INDEX" in plan or "USING INDEX ix_" in plan for plan in plans)
    # The only scans: whole-table counts (SQLite counts those from the b-tree's pages, without
    # stepping through a row) and the batches' own job counts, one row per batch.
    for (sql, _), plan in zip(statements, plans, strict=True):
        scanned = sorted(step.split()[1] for step in plan.split(" / ") if step.startswith("SCAN"))
        whole = re.findall(r"\(SELECT count\(\*\) AS \w+\s+FROM (jobs|attempts|outputs)\)", sql)
        sizes = ["batches"] * sql.count("(SELECT sum(batches.job_count) AS")
        assert scanned == sorted(whole + sizes)
    used = " ".join(plans)
    for index in ("ix_attempts_batch_spend", "ix_attempts_not_ok", "ix_outputs_mismatched"):
        assert f"INDEX {index} " in used
    assert "INDEX ix_outputs_edit_flag " in used
