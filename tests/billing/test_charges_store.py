"""The store's charge verbs, on SQLite and PostgreSQL: provider verdicts, observed policies,
spend grouping, repricing and balance readings."""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest

from runner.billing import apply_observed, observed_route, reprice_attempts
from runner.config import load_settings
from runner.models import ChargeEvidence, ChargeStatus, JobSpec, Outcome, SourceImage, utcnow
from runner.pricing import PricedJob
from runner.routes.sizes import Size
from runner.store import AttemptResult, AttemptStart, Store
from runner.store.charges import BalanceSnapshot, ChargeObservation, ChargeUpdate

pytestmark = pytest.mark.anyio

ROUTE = "sandbox-laozhang"
WORKER = "w-test"


async def make_attempts(
    store: Store,
    outcomes: list[tuple[Outcome, ChargeStatus, float | None]],
    specs: list[JobSpec] | None = None,
) -> list[str]:
    """One job per entry (``specs``, or plain ones), each with one finished attempt; returns
    the attempt ids."""
    specs = specs or [
        JobSpec(key=secrets.token_hex(8), ext_id=f"j{i}", line=i, prompt=f"p{i}", params={})
        for i in range(len(outcomes))
    ]
    batch = (
        await store.submit(
            name=f"b-{secrets.token_hex(3)}",
            route=ROUTE,
            manifest="m.jsonl",
            manifest_sha256="0" * 64,
            route_snapshot={},
            budget_usd=None,
            specs=specs,
        )
    ).batch
    jobs = await store.claim(worker_id=WORKER, batch_ids=[batch.id], limit=99, lease_seconds=60)
    ids = []
    for job, (outcome, charge, expected) in zip(jobs, outcomes, strict=True):
        start = AttemptStart(
            id=f"ir-{secrets.token_hex(6)}",
            job_id=job.id,
            batch_id=batch.id,
            worker_id=WORKER,
            route=ROUTE,
            provider="sandbox",
            shape="images",
            endpoint="/images/generations",
            model="gpt-image-2",
            billing_unit="call",
            params={},
            worst_case_usd=0.03,
            started_at=utcnow(),
        )
        await store.start_attempt(start)
        result = AttemptResult(
            id=start.id,
            job_id=job.id,
            outcome=outcome,
            finished_at=start.started_at + timedelta(seconds=1),
            latency_ms=1000.0,
            images_returned=1 if outcome is Outcome.OK else 0,
            expected_usd=expected,
            charge_status=charge,
        )
        await (store.complete(result, []) if outcome is Outcome.OK else store.fail(result))
        ids.append(start.id)
    return ids


async def test_recorded_charges_replace_the_policy_guess(store: Store) -> None:
    ok, timeout = await make_attempts(
        store,
        [
            (Outcome.OK, ChargeStatus.CHARGED, 0.03),
            (Outcome.TIMEOUT, ChargeStatus.UNKNOWN, 0.03),
        ],
    )
    await store.record_charges(
        [
            ChargeUpdate(
                attempt_id=timeout,
                charge_status=ChargeStatus.NOT_CHARGED,
                evidence=ChargeEvidence.CALL_LOG,
                observed_usd=0.0,
            )
        ]
    )
    found = {a.id: a for a in await store.billed_attempts(routes=[ROUTE])}
    assert found[timeout].charge_status is ChargeStatus.NOT_CHARGED
    assert found[timeout].charge_evidence is ChargeEvidence.CALL_LOG
    assert found[timeout].cost_usd == 0.0
    assert found[ok].cost_usd == 0.03
    assert await store.exposure_usd([a.batch_id for a in found.values()]) == pytest.approx(0.03)


async def test_cost_rows_group_spend_and_count_unknowns_at_what_they_may_cost(
    store: Store,
) -> None:
    await make_attempts(
        store,
        [
            (Outcome.OK, ChargeStatus.CHARGED, 0.03),
            (Outcome.OK, ChargeStatus.CHARGED, 0.03),
            (Outcome.SERVER_ERROR, ChargeStatus.NOT_CHARGED, 0.0),
            (Outcome.TIMEOUT, ChargeStatus.UNKNOWN, 0.03),
        ],
    )
    rows = {(r.outcome, r.charge_status): r for r in await store.cost_rows()}
    assert rows["ok", ChargeStatus.CHARGED].attempts == 2
    assert rows["ok", ChargeStatus.CHARGED].cost_usd == pytest.approx(0.06)
    assert rows["server_error", ChargeStatus.NOT_CHARGED].cost_usd == 0.0
    assert rows["timeout", ChargeStatus.UNKNOWN].cost_usd == pytest.approx(0.03)


async def test_newest_observation_wins_and_overrides_the_documented_policy(store: Store) -> None:
    catalog = load_settings(environ={}).catalog
    route = catalog.get(ROUTE)
    assert route.charge_policy(Outcome.SERVER_ERROR) is ChargeStatus.NOT_CHARGED
    early = utcnow() - timedelta(minutes=5)
    await store.record_observations(
        [
            ChargeObservation(
                route=ROUTE,
                outcome=Outcome.SERVER_ERROR,
                charge_status=ChargeStatus.NOT_CHARGED,
                evidence=ChargeEvidence.PROBE,
                observed_at=early,
            ),
            ChargeObservation(
                route=ROUTE,
                outcome=Outcome.SERVER_ERROR,
                charge_status=ChargeStatus.CHARGED,
                evidence=ChargeEvidence.CALL_LOG,
                observed_usd=0.03,
            ),
            ChargeObservation(
                route="sandbox-openai",
                outcome=Outcome.TIMEOUT,
                charge_status=ChargeStatus.NOT_CHARGED,
                evidence=ChargeEvidence.PROBE,
            ),
        ]
    )
    policy = await store.observed_policy(ROUTE)
    assert set(policy) == {Outcome.SERVER_ERROR}
    assert policy[Outcome.SERVER_ERROR].evidence is ChargeEvidence.CALL_LOG

    observed = await observed_route(store, route)
    assert observed.charge_policy(Outcome.SERVER_ERROR) is ChargeStatus.CHARGED
    assert observed.charge_policy(Outcome.TIMEOUT) is route.charge_policy(Outcome.TIMEOUT)
    assert apply_observed(route, {}) is route


async def test_reprice_recomputes_expected_costs_and_keeps_charge_statuses(store: Store) -> None:
    settings = load_settings(environ={})
    await make_attempts(
        store,
        [
            (Outcome.OK, ChargeStatus.CHARGED, 0.05),  # priced with an older book
            (Outcome.SERVER_ERROR, ChargeStatus.CHARGED, 0.0),  # a call log said: charged
            (Outcome.INVALID_REQUEST, ChargeStatus.NOT_CHARGED, 0.0),
        ],
    )
    summary = await reprice_attempts(store, settings.catalog, settings.book, None)
    assert (summary.before_usd, summary.after_usd) == (pytest.approx(0.05), pytest.approx(0.06))
    assert summary.changed == 2
    by_outcome = {a.outcome: a for a in await store.billed_attempts()}
    assert by_outcome[Outcome.OK].expected_usd == pytest.approx(0.03)
    assert by_outcome[Outcome.SERVER_ERROR].charge_status is ChargeStatus.CHARGED
    assert by_outcome[Outcome.SERVER_ERROR].expected_usd == pytest.approx(0.03)
    assert by_outcome[Outcome.INVALID_REQUEST].expected_usd == 0.0


async def test_repricing_reads_what_pricing_needs_of_the_stored_job(store: Store) -> None:
    """Options, prompt length, and the source images with the mask counted as one more."""
    edit = JobSpec(
        key=secrets.token_hex(8),
        ext_id="edit",
        line=1,
        prompt="a fox",
        params={"model": "gpt-image-1.5", "size": "1024x1536", "quality": "high", "n": 2},
        images=(SourceImage(kind="path", ref="/a.png"), SourceImage(kind="path", ref="/b.png")),
        mask=SourceImage(kind="path", ref="/m.png"),
    )
    plain = JobSpec(key=secrets.token_hex(8), ext_id="plain", line=2, prompt="", params={})
    await make_attempts(
        store,
        [(Outcome.OK, ChargeStatus.CHARGED, 0.03), (Outcome.OK, ChargeStatus.CHARGED, 0.03)],
        [edit, plain],
    )
    found = {i.job.prompt_chars: i.job for i in await store.repricing_inputs()}
    assert found == {
        5: PricedJob(
            model="gpt-image-1.5",
            n=2,
            quality="high",
            size=Size(1024, 1536),
            prompt_chars=5,
            input_images=3,
        ),
        0: PricedJob(),
    }


async def test_balance_snapshots_come_back_in_time_order_per_account(store: Store) -> None:
    now = utcnow()
    for minutes, used in ((2, 1.5), (0, 1.56), (1, 1.53)):
        await store.record_balance(
            BalanceSnapshot(
                route=ROUTE,
                account="KEY@http://x/api/usage/token",
                used_usd=used,
                remaining_usd=None,
                source="probe",
                taken_at=now - timedelta(minutes=minutes),
            )
        )
    readings = await store.balance_snapshots("KEY@http://x/api/usage/token")
    assert [s.used_usd for s in readings] == [1.5, 1.53, 1.56]
    assert await store.balance_snapshots("other") == []
