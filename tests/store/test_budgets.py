"""Batch budgets shared between workers: grants come only out of what nobody holds."""

from __future__ import annotations

import pytest

from runner.models import ChargeStatus, Outcome
from runner.store import Store

from .factories import claim_all, result_of, specs, start_of, submit

pytestmark = pytest.mark.anyio

HOLD = 120.0


async def budgeted(store: Store, budget: float | None, workers: tuple[str, ...]) -> str:
    batch = (await submit(store, "shared", specs(4), budget_usd=budget)).batch
    for worker in workers:
        await store.register_worker(worker, "host", 1)
    return batch.id


async def test_a_batch_without_a_budget_grants_what_is_asked(store: Store) -> None:
    batch = await budgeted(store, None, ("w1",))
    assert await store.grant_budget(batch, "w1", 7.5, hold_s=HOLD) == 7.5


async def test_a_second_worker_gets_only_what_the_first_does_not_hold(store: Store) -> None:
    batch = await budgeted(store, 1.00, ("w1", "w2"))

    assert await store.grant_budget(batch, "w1", 0.70, hold_s=HOLD) == pytest.approx(0.70)
    assert await store.grant_budget(batch, "w2", 0.70, hold_s=HOLD) == pytest.approx(0.30)
    assert await store.grant_budget(batch, "w2", 0.10, hold_s=HOLD) == 0.0
    assert await store.grant_budget(batch, "w1", 0.10, hold_s=HOLD) == 0.0


async def test_what_was_spent_counts_whoever_spent_it(store: Store) -> None:
    """A worker's spending comes out of its own grant; an old run's spending out of the rest."""
    batch = await budgeted(store, 1.00, ("w1", "w2"))
    [job, *_] = await claim_all(store, batch, "old-run")
    start = start_of(job, "old-run", worst_case_usd=0.50)
    await store.start_attempt(start)
    # In flight: counted at its worst case.
    assert await store.grant_budget(batch, "w1", 1.00, hold_s=HOLD) == pytest.approx(0.50)
    await store.complete(
        result_of(start, Outcome.OK, expected_usd=0.20, charge=ChargeStatus.CHARGED), []
    )
    # Done: counted at what it cost, so 0.30 came back.
    assert await store.grant_budget(batch, "w2", 1.00, hold_s=HOLD) == pytest.approx(0.30)


async def test_a_stopped_workers_unspent_grant_goes_back(store: Store) -> None:
    batch = await budgeted(store, 1.00, ("w1", "w2"))
    await store.grant_budget(batch, "w1", 1.00, hold_s=HOLD)
    assert await store.grant_budget(batch, "w2", 1.00, hold_s=HOLD) == 0.0

    await store.stop_worker("w1")

    assert await store.grant_budget(batch, "w2", 1.00, hold_s=HOLD) == pytest.approx(1.00)


async def test_a_lapsed_grant_goes_back_and_its_holder_keeps_only_what_it_spent(
    store: Store,
) -> None:
    """A grant its holder did not renew in time (judged by the holder's own hold) returns;
    the holder learns so on its next renewal and may spend no more of it."""
    batch = await budgeted(store, 1.00, ("w1", "w2"))
    [job, *_] = await claim_all(store, batch, "w1")
    await store.grant_budget(batch, "w1", 0.60, hold_s=0.0)  # lapses at once
    await store.start_attempt(start_of(job, "w1", worst_case_usd=0.25))

    assert await store.grant_budget(batch, "w2", 1.00, hold_s=HOLD) == pytest.approx(0.75)
    assert await store.renew_budget_grants("w1", HOLD) == [batch]
    assert await store.renew_budget_grants("w1", HOLD) == []  # renewed: held again
    # w1 now holds exactly what it spent: nothing is left for it.
    assert await store.grant_budget(batch, "w1", 0.10, hold_s=HOLD) == 0.0


async def test_a_grant_smaller_than_asked_for_at_least_is_not_made(store: Store) -> None:
    """A sliver that cannot pay for the next attempt would only block other workers."""
    batch = await budgeted(store, 1.00, ("w1", "w2"))
    await store.grant_budget(batch, "w1", 0.95, hold_s=HOLD)

    assert await store.grant_budget(batch, "w2", 0.50, at_least=0.10, hold_s=HOLD) == 0.0
    assert await store.grant_budget(batch, "w2", 0.50, at_least=0.05, hold_s=HOLD) == (
        pytest.approx(0.05)
    )
