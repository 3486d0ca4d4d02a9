"""A worker's lanes share one request for more of a batch budget, so other workers get theirs."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from runner.pricing import load_price_book
from runner.run.attempt import GRANT_ATTEMPTS, JobRunner
from runner.run.spending import Budget
from runner.run.stats import RunStats
from runner.store import Store
from tests.store.factories import specs, submit

pytestmark = pytest.mark.anyio

BUDGET = 10.00
WORST = 0.10


def runner(store: Store, batch: str, worker: str, tmp_path: Path) -> JobRunner:
    return JobRunner(
        store=store,
        ledger=store,
        book=load_price_book(),
        data_dir=tmp_path,
        worker_id=worker,
        stats=RunStats(),
        budgets={batch: Budget(0.0, batch_id=batch, cap_usd=BUDGET)},
    )


async def test_fifty_lanes_out_of_budget_take_what_they_need_not_fifty_shares(
    store: Store, tmp_path: Path
) -> None:
    batch = (await submit(store, "shared", specs(3), budget_usd=BUDGET)).batch.id
    for worker in ("A", "B"):
        await store.register_worker(worker, "host", 1)
    a, b = runner(store, batch, "A", tmp_path), runner(store, batch, "B", tmp_path)
    reserved: list[bool] = []

    async def reserve() -> None:
        reserved.append(await a._reserve([a.budgets[batch]], WORST))

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(reserve)

    held = a.budgets[batch].limit_usd
    assert reserved == [True] * 50
    # What 50 attempts need, plus at most one share's slack: not 50 shares.
    assert held <= 50 * WORST + max(GRANT_ATTEMPTS * WORST, 0.02 * BUDGET) + 1e-9
    assert await b._reserve([b.budgets[batch]], WORST)
    assert b.stats.budget_stop is None
