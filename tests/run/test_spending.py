"""Spending: the run's cap and each batch's database-granted share, the reservation every
attempt holds on them, its settling or cancelling, and shares forfeited when they lapse."""

from __future__ import annotations

import anyio
import pytest

from runner.models import ChargeStatus, Job, Outcome, utcnow
from runner.run.spending import (
    GRANT_ATTEMPTS,
    GRANT_SHARE,
    UNLIMITED,
    BatchShare,
    RunCap,
    Spending,
    exposure_of,
)
from runner.store import Store
from tests.store.factories import claim_all, result_of, specs, start_of, submit

pytestmark = pytest.mark.anyio

BUDGET = 10.00
WORST = 0.10
HOLD = 120.0


async def budgeted_batch(store: Store, budget: float | None = BUDGET) -> str:
    batch = (await submit(store, "shared", specs(3), budget_usd=budget)).batch
    for worker in ("A", "B"):
        await store.register_worker(worker, "host", 1)
    return batch.id


async def opened(
    store: Store, worker: str, *, cap_usd: float | None = None, hold_s: float = HOLD
) -> Spending:
    spending = Spending(store=store, worker_id=worker, hold_s=hold_s)
    await spending.open(store, await store.list_batches(), cap_usd=cap_usd)
    return spending


def share_of(spending: Spending, batch: str) -> BatchShare:
    return spending.shares[batch]


async def test_fifty_lanes_out_of_budget_take_what_they_need_not_fifty_shares(
    store: Store,
) -> None:
    """A worker's lanes share one request for more of a batch budget, so others get theirs."""
    batch = await budgeted_batch(store)
    a, b = await opened(store, "A"), await opened(store, "B")
    reserved: list[bool] = []

    async def reserve() -> None:
        reserved.append(await a.reserve(batch, WORST) is not None)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(reserve)

    held = share_of(a, batch).granted_usd
    assert reserved == [True] * 50
    # What 50 attempts need, plus at most one share's slack: not 50 shares.
    assert held <= 50 * WORST + max(GRANT_ATTEMPTS * WORST, 0.02 * BUDGET) + 1e-9
    assert await b.reserve(batch, WORST) is not None
    assert b.stopped is None


async def test_a_batch_share_is_asked_for_in_fair_sized_grants(store: Store) -> None:
    batch = await budgeted_batch(store)
    spending = await opened(store, "A")
    assert share_of(spending, batch).granted_usd == 0.0  # nothing is held before it is needed

    assert await spending.reserve(batch, WORST) is not None

    share = share_of(spending, batch)
    assert share.granted_usd == pytest.approx(max(GRANT_ATTEMPTS * WORST, GRANT_SHARE * BUDGET))
    assert share.reserved_usd == pytest.approx(WORST)
    # The database holds the grant against the others.
    left = BUDGET - share.granted_usd
    assert await store.grant_budget(batch, "B", BUDGET, hold_s=HOLD) == pytest.approx(left)


async def test_a_batch_share_stops_at_the_batch_budget(store: Store) -> None:
    batch = await budgeted_batch(store, budget=0.25)
    spending = await opened(store, "A")

    assert await spending.reserve(batch, WORST) is not None
    assert await spending.reserve(batch, WORST) is not None
    assert await spending.reserve(batch, WORST) is None

    assert spending.stopped == (
        f"budget reached: batch {batch}'s $0.25 is spent, in flight or granted to other live "
        "workers; the next job could cost up to $0.1000"
    )
    assert share_of(spending, batch).reserved_usd == pytest.approx(2 * WORST)


async def test_the_run_cap_counts_what_the_database_already_holds(store: Store) -> None:
    batch = await budgeted_batch(store, budget=None)
    [job, *_] = await claim_all(store, batch, "old-run")
    await store.start_attempt(start_of(job, "old-run", worst_case_usd=0.50))  # in flight

    spending = await opened(store, "A", cap_usd=1.00)

    assert spending.cap == RunCap(cap_usd=1.00, committed_usd=pytest.approx(0.50))
    assert spending.shares == {}
    assert await spending.reserve(batch, 0.40) is not None
    assert await spending.reserve(batch, 0.20) is None
    assert spending.stopped == (
        "budget reached: $0.9000 committed of $1.00; the next job could cost up to $0.2000"
    )


async def test_a_reservation_settles_to_what_the_attempt_cost(store: Store) -> None:
    batch = await budgeted_batch(store, budget=None)
    spending = await opened(store, "A", cap_usd=1.00)
    assert spending.cap is not None

    reservation = await spending.reserve(batch, 0.60)
    assert reservation is not None
    assert spending.cap.reserved_usd == pytest.approx(0.60)
    # Nothing else fits while the worst case is held…
    assert await spending.reserve(batch, 0.60) is None

    reservation.settle(0.15)

    # …and once it settles, only what it cost stays counted.
    assert spending.cap.reserved_usd == 0.0
    assert spending.cap.committed_usd == pytest.approx(0.15)
    assert await spending.reserve(batch, 0.60) is not None


async def test_a_cancelled_reservation_gives_its_worst_case_back(store: Store) -> None:
    batch = await budgeted_batch(store)
    spending = await opened(store, "A", cap_usd=1.00)
    assert spending.cap is not None

    reservation = await spending.reserve(batch, WORST)
    assert reservation is not None
    reservation.cancel()

    for scope in (spending.cap, share_of(spending, batch)):
        assert scope.reserved_usd == 0.0
        assert scope.committed_usd == 0.0


async def test_a_refusal_by_the_batch_share_gives_back_the_run_caps_reservation(
    store: Store,
) -> None:
    batch = await budgeted_batch(store, budget=0.05)
    spending = await opened(store, "A", cap_usd=5.00)
    assert spending.cap is not None

    assert await spending.reserve(batch, WORST) is None

    assert spending.cap.reserved_usd == 0.0
    assert (spending.stopped or "").startswith(f"budget reached: batch {batch}'s $0.05")


async def test_a_refusal_by_the_run_cap_asks_for_no_share(store: Store) -> None:
    batch = await budgeted_batch(store)
    spending = await opened(store, "A", cap_usd=0.05)

    assert await spending.reserve(batch, WORST) is None

    assert share_of(spending, batch).granted_usd == 0.0
    assert await store.grant_budget(batch, "B", BUDGET, hold_s=HOLD) == pytest.approx(BUDGET)
    assert (spending.stopped or "").startswith("budget reached: $0.0000 committed of $0.05")


async def test_without_budgets_every_attempt_fits(store: Store) -> None:
    batch = await budgeted_batch(store, budget=None)
    spending = await opened(store, "A")

    reservation = await spending.reserve(batch, 1_000.0)

    assert reservation is UNLIMITED
    assert reservation.scopes == ()
    reservation.settle(1_000.0)
    reservation.cancel()
    assert spending.stopped is None


async def test_renewal_keeps_a_live_share(store: Store) -> None:
    batch = await budgeted_batch(store)
    spending = await opened(store, "A")
    assert await spending.reserve(batch, WORST) is not None
    granted = share_of(spending, batch).granted_usd

    await spending.renew()

    assert share_of(spending, batch).granted_usd == granted


async def test_a_lapsed_share_is_forfeited_down_to_what_was_spent(store: Store) -> None:
    batch = await budgeted_batch(store)
    # A hold already over when it is granted: the next renewal finds the grant lapsed.
    spending = await opened(store, "A", hold_s=-1.0)
    spent = await spending.reserve(batch, WORST)
    in_flight = await spending.reserve(batch, WORST)
    assert spent is not None
    assert in_flight is not None
    spent.settle(0.04)
    share = share_of(spending, batch)
    assert share.granted_usd > share.committed_usd + share.reserved_usd

    await spending.renew()

    assert share.granted_usd == pytest.approx(0.04 + WORST)
    # Anything more is a new grant, asked of the database.
    assert await spending.reserve(batch, WORST) is not None
    assert share.granted_usd > 0.04 + 2 * WORST - 1e-9


async def test_forfeiting_keeps_what_is_committed_and_reserved() -> None:
    share = BatchShare(batch_id="b", budget_usd=1.0, granted_usd=0.5)
    assert share.reserve(0.2)
    share.settle(0.2, 0.1)
    assert share.reserve(0.15)

    share.forfeit()

    assert share.granted_usd == pytest.approx(0.25)
    assert share.room() == pytest.approx(0.0)
    assert not share.reserve(0.01)


@pytest.mark.parametrize(
    ("charge", "expected", "exposure"),
    [
        (ChargeStatus.NOT_CHARGED, 0.2, 0.0),
        (ChargeStatus.CHARGED, 0.2, 0.2),
        (ChargeStatus.UNKNOWN, 0.2, 0.2),
        (ChargeStatus.UNKNOWN, None, 0.0),
    ],
)
def test_an_attempt_counts_unless_it_is_known_to_be_free(
    charge: ChargeStatus, expected: float | None, exposure: float
) -> None:
    job = Job(
        id=1,
        batch_id="b",
        route="sandbox-openai",
        ext_id="j1",
        prompt="a kite",
        params={},
        images=(),
        mask=None,
        attempts=0,
        created_at=utcnow(),
    )
    result = result_of(
        start_of(job, "A"), Outcome.SERVER_ERROR, expected_usd=expected, charge=charge
    )
    assert exposure_of(result) == exposure
