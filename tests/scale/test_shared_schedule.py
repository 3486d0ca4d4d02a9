"""The route schedule in PostgreSQL, seen from two stores (as from two worker processes)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio
import pytest

from runner.store import Store

ROUTE = "sandbox-laozhang"
#: Seconds between slots: long, so that slow round trips cannot blur the arithmetic.
INTERVAL = 10.0


@pytest.fixture
async def two_stores(pg_url: str) -> AsyncIterator[tuple[Store, Store]]:
    first = await Store.open(pg_url)
    second = await Store.open(pg_url)
    try:
        await first.ensure_route_state(ROUTE)
        yield first, second
    finally:
        await first.close()
        await second.close()


async def _waits(stores: tuple[Store, Store], count: int, tolerance: float) -> list[float]:
    waits = []
    for i in range(count):  # alternate: each store must see the other's slots
        slot = await stores[i % 2].take_rate_slot(ROUTE, INTERVAL, tolerance)
        assert slot.paused <= 0
        waits.append(slot.wait)
    return waits


@pytest.mark.anyio
async def test_two_workers_take_slots_from_one_schedule(two_stores: tuple[Store, Store]) -> None:
    """One interval apart, whichever process asks: 4 requests take 3 intervals, not 1.5."""
    waits = await _waits(two_stores, 4, tolerance=0.0)
    assert waits[0] == 0.0
    for n, wait in enumerate(waits[1:], start=1):
        assert (n - 0.5) * INTERVAL < wait <= n * INTERVAL, waits


@pytest.mark.anyio
async def test_each_slot_is_spaced_by_its_own_takers_interval(
    two_stores: tuple[Store, Store],
) -> None:
    """A worker paced three times slower than the other waits its own interval after the
    other's slot, and the other its own after that: the request that comes too soon for the
    limit is the fast worker's, which is then refused and backs off itself (spaced by the
    previous taker's interval, the slow worker's came 10 s after the fast one's, was
    refused, and the slow worker backed off)."""
    first, second = two_stores
    assert (await first.take_rate_slot(ROUTE, INTERVAL)).wait == 0.0
    slow = (await second.take_rate_slot(ROUTE, 3 * INTERVAL)).wait
    assert 2.5 * INTERVAL < slow <= 3 * INTERVAL
    fast = (await first.take_rate_slot(ROUTE, INTERVAL)).wait
    assert 3.5 * INTERVAL < fast <= 4 * INTERVAL


@pytest.mark.anyio
async def test_a_gap_in_the_schedule_is_made_up_by_at_most_the_tolerance(
    two_stores: tuple[Store, Store],
) -> None:
    """After an idle spell, a burst of tolerance/interval + 1 requests, then the rate again."""
    waits = await _waits(two_stores, 5, tolerance=2.5 * INTERVAL)
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert 0.0 < waits[3] <= 0.5 * INTERVAL, waits
    assert 1.0 * INTERVAL < waits[4] <= 1.5 * INTERVAL, waits


@pytest.mark.anyio
async def test_a_pause_holds_every_worker(two_stores: tuple[Store, Store]) -> None:
    """A 429 seen by one worker: the other's next slot request is refused until it ends."""
    first, second = two_stores
    await first.pause_route(ROUTE, 30.0)
    paused = (await second.take_rate_slot(ROUTE, INTERVAL)).paused
    assert 25.0 < paused <= 30.0


@pytest.mark.anyio
async def test_slots_keep_to_the_routes_learned_pace(two_stores: tuple[Store, Store]) -> None:
    """A worker that backed off saves the route's pace at once: the other's next slot keeps to
    it, though it asks with the faster interval it still works from; a pace older than the
    age limit is not kept to, nor is one asked without it."""
    first, second = two_stores
    assert (await first.take_rate_slot(ROUTE, INTERVAL, paced_within=3600)).wait == 0.0
    # 2 a minute: 30 s between slots.
    pace = {"rpm": 2.0, "reason": "backed off after a 429", "seq": 1}
    assert await first.save_pace(ROUTE, pace, after=0, max_age_s=3600)
    slowed = (await second.take_rate_slot(ROUTE, INTERVAL, paced_within=3600)).wait
    assert 29.0 < slowed <= 30.0
    # Its own interval when that is the slower one.
    slower = (await second.take_rate_slot(ROUTE, 4 * INTERVAL, paced_within=3600)).wait
    assert slowed + 39.0 < slower <= slowed + 40.0
    unpaced = (await first.take_rate_slot(ROUTE, INTERVAL)).wait
    assert slower + 9.0 < unpaced <= slower + 10.0
    await anyio.sleep(0.05)
    stale = (await first.take_rate_slot(ROUTE, INTERVAL, paced_within=0.01)).wait
    assert unpaced + 9.0 < stale <= unpaced + 10.0
    # A worker's margin for late arrivals goes on top of the saved pace it keeps to.
    margin = (await second.take_rate_slot(ROUTE, INTERVAL, paced_within=3600, allowance=2.0)).wait
    assert stale + 31.0 < margin <= stale + 32.0


@pytest.mark.anyio
async def test_a_slot_says_when_on_the_databases_clock_its_wait_counts_from(
    two_stores: tuple[Store, Store],
) -> None:
    """The wait counts from the database's clock as it answered, not from when the answer
    reaches the worker (later by a varying time): the slot carries that clock."""
    first, _ = two_stores
    before = time.time()
    slot = await first.take_rate_slot(ROUTE, INTERVAL)
    after = time.time()
    assert before - 0.5 < slot.clock < after + 0.5  # one machine's clock here
    later = await first.take_rate_slot(ROUTE, INTERVAL)
    assert later.clock + later.wait == pytest.approx(slot.clock + slot.wait + INTERVAL, abs=0.01)
