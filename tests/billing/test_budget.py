"""A budget holds under concurrency 32 with slow calls: spend never passes it, and the run
says why it stopped."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from sqlalchemy import select

from runner.models import ChargeStatus, JobState
from runner.sandbox import FaultKind, Latency, SandboxConfig
from runner.store.engine import reading
from runner.store.tables import attempts

from .conftest import MakeWorld

pytestmark = pytest.mark.anyio

SLOW = SandboxConfig(
    latency=Latency(mean=0.3, jitter=0.2),
    # Charged failures (a 200 with no image is charged by new-api) and uncharged ones.
    fault_rates={FaultKind.SERVER_ERROR: 0.1, FaultKind.EMPTY_DATA: 0.05},
)


@pytest.mark.parametrize(
    ("scope", "route", "fields", "budget"),
    [
        ("run", "sandbox-laozhang", {}, 0.60),
        ("batch", "sandbox-openai", {"quality": "low", "size": "1024x1024"}, 0.12),
    ],
)
async def test_budget_is_never_exceeded_under_concurrency(
    world: MakeWorld, scope: str, route: str, fields: dict[str, Any], budget: float
) -> None:
    w = world(SLOW)
    lines = [{"id": f"j{i}", "prompt": f"a red kite, take {i}", **fields} for i in range(200)]
    batch = await w.submit(lines, route, budget=budget if scope == "batch" else None)
    options = {"budget_usd": budget} if scope == "run" else {}

    result = await w.run([batch.id], concurrency=32, rpm=60_000, **options)

    report = result.report
    assert report is not None
    assert report.stats.budget_stop is not None
    assert report.stats.budget_stop.startswith("budget reached")
    # It stopped because of the budget, with work left, not because it ran out of jobs.
    assert report.counts.get(JobState.QUEUED, 0) + report.counts.get(JobState.WAITING, 0) > 0
    store = await w.store()
    try:
        exposure = await store.exposure_usd([batch.id])
        ledger = await store.billed_attempts(batch_ids=[batch.id])
    finally:
        await store.close()
    charged_or_unknown = sum(
        (a.expected_usd or 0.0) for a in ledger if a.charge_status is not ChargeStatus.NOT_CHARGED
    )
    sandbox_total = sum(r.charged_usd for r in await w.settled({a.id for a in ledger}))
    assert charged_or_unknown <= budget + 1e-9
    assert exposure <= budget + 1e-9
    assert sandbox_total <= budget + 1e-9
    # …and it used the budget rather than stopping at the first request.
    assert sandbox_total >= budget / 2


async def test_two_runs_on_one_batch_share_its_budget(world: MakeWorld) -> None:
    """Two `imagerun run` processes (two runners here, each with its own worker id) on one
    budgeted batch: together they stay within it, and both get to spend some of it."""
    budget = 0.12
    w = world(SLOW)
    fields = {"quality": "low", "size": "1024x1024"}
    lines = [{"id": f"j{i}", "prompt": f"a blue kite, take {i}", **fields} for i in range(200)]
    batch = await w.submit(lines, "sandbox-openai", budget=budget)
    reports = []

    async def one_run() -> None:
        result = await w.run([batch.id], concurrency=4, rpm=60_000)
        reports.append(result.report)

    async with anyio.create_task_group() as tg:
        tg.start_soon(one_run)
        tg.start_soon(one_run)

    for report in reports:
        assert report is not None
        assert (report.stats.budget_stop or "").startswith("budget reached")
    store = await w.store()
    try:
        exposure = await store.exposure_usd([batch.id])
        ledger = await store.billed_attempts(batch_ids=[batch.id])
        async with reading(store.engine) as conn:
            query = select(attempts.c.worker_id).where(attempts.c.batch_id == batch.id)
            spenders = set((await conn.execute(query.distinct())).scalars())
    finally:
        await store.close()
    sandbox_total = sum(r.charged_usd for r in await w.settled({a.id for a in ledger}))
    assert exposure <= budget + 1e-9
    assert sandbox_total <= budget + 1e-9
    assert sandbox_total >= budget / 2
    assert len(spenders) == 2
