"""Route gates: pacing at the route's rate, pauses after a 429, the stop switch, and the gate
shared by every worker of a PostgreSQL database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from runner.run.gate import RATE_MARGIN, BaseGate, RouteGate, burst_size
from runner.run.shared_gate import SharedGate
from runner.store import Store

pytestmark = pytest.mark.anyio

#: 19.8 requests a second after the margin, four at once.
RPM = 1200
ROUTE = "sandbox-openai"


async def admit_all(gate: BaseGate, count: int) -> float:
    """Seconds ``count`` admissions take, one after another."""
    start = anyio.current_time()
    with anyio.fail_after(10):
        for _ in range(count):
            await gate.admit()
    return anyio.current_time() - start


def least_time(count: int, rpm: int = RPM) -> float:
    """The shortest time ``count`` admissions may take: a burst, then one per interval."""
    return (count - burst_size(rpm)) / (rpm * RATE_MARGIN / 60)


def test_the_burst_is_a_quarter_seconds_worth_and_never_zero() -> None:
    assert burst_size(1200) == 4
    assert burst_size(60) == 1
    assert burst_size(1) == 1


async def test_a_burst_is_admitted_at_once() -> None:
    gate = RouteGate(RPM)
    assert await admit_all(gate, burst_size(RPM)) < 0.05


async def test_admission_paces_at_the_routes_rate() -> None:
    gate = RouteGate(RPM)
    count = 14
    elapsed = await admit_all(gate, count)
    assert elapsed >= least_time(count) * 0.95
    assert elapsed < least_time(count) + 1.0


async def test_a_pause_holds_admission_until_it_ends() -> None:
    gate = RouteGate(RPM)
    start = anyio.current_time()
    await gate.pause(0.3)
    assert gate.paused_for == pytest.approx(0.3, abs=0.05)
    await admit_all(gate, 1)
    assert anyio.current_time() - start >= 0.3


async def test_a_pause_only_ever_extends() -> None:
    gate = RouteGate(RPM)
    start = anyio.current_time()
    await gate.pause(0.3)
    await gate.pause(0.05)
    assert gate.paused_for > 0.2
    await admit_all(gate, 1)
    assert anyio.current_time() - start >= 0.3


async def test_a_pause_taken_while_waiting_for_a_slot_holds_that_request_too() -> None:
    gate = RouteGate(60)  # one request a second, give or take
    await gate.admit()
    admitted = anyio.Event()

    async def second() -> None:
        await gate.admit()
        admitted.set()

    start = anyio.current_time()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(second)
            await anyio.sleep(0.1)
            await gate.pause(2.0)
            await admitted.wait()
    assert anyio.current_time() - start >= 2.0


async def test_the_first_stop_reason_wins() -> None:
    gate = RouteGate(RPM)
    assert gate.stopped is None
    gate.stop("auth: bad key")
    gate.stop("quota_exhausted: no credit")
    assert gate.stopped == "auth: bad key"


async def test_a_stop_while_paused_is_seen_when_admission_returns() -> None:
    """The caller checks ``stopped`` after ``admit``: a stop during the wait sends nothing."""
    gate = RouteGate(RPM)
    await gate.pause(0.2)
    seen: list[str | None] = []

    async def admit() -> None:
        await gate.admit()
        seen.append(gate.stopped)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(admit)
            await anyio.sleep(0.05)
            assert seen == []
            gate.stop("auth: bad key")
    assert seen == ["auth: bad key"]


@pytest.fixture
async def pg_stores(pg_url: str) -> AsyncIterator[tuple[Store, Store]]:
    """Two stores on one PostgreSQL database, as two worker processes would hold."""
    first = await Store.open(pg_url)
    second = await Store.open(pg_url, migrate=False)
    try:
        yield first, second
    finally:
        await second.close()
        await first.close()


async def shared_pair(stores: tuple[Store, Store], rpm: int = RPM) -> tuple[SharedGate, SharedGate]:
    gates = SharedGate(stores[0], ROUTE, rpm), SharedGate(stores[1], ROUTE, rpm)
    for gate in gates:
        await gate.start()
    return gates


async def test_shared_gates_pace_at_the_routes_rate_between_them(
    pg_stores: tuple[Store, Store],
) -> None:
    a, b = await shared_pair(pg_stores)
    count = 14
    start = anyio.current_time()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(admit_all, a, count // 2)
            tg.start_soon(admit_all, b, count // 2)
    elapsed = anyio.current_time() - start
    assert elapsed >= least_time(count) * 0.9
    assert elapsed < least_time(count) + 2.0


async def test_a_pause_on_one_shared_gate_holds_the_other(pg_stores: tuple[Store, Store]) -> None:
    a, b = await shared_pair(pg_stores)
    start = anyio.current_time()
    await a.pause(0.5)
    assert a.paused_for > 0.4
    # The other gate learns of the pause from the database, on its next slot request.
    assert b.paused_for == 0.0
    await admit_all(b, 1)
    assert anyio.current_time() - start >= 0.45
    assert b.paused_for == 0.0
    assert await admit_all(a, 1) < 0.3


async def test_a_stop_on_one_shared_gate_is_its_own(pg_stores: tuple[Store, Store]) -> None:
    """A stop is this process's verdict on the route (its key, its quota), not the others'."""
    a, b = await shared_pair(pg_stores)
    a.stop("auth: bad key")
    a.stop("quota_exhausted: no credit")
    assert a.stopped == "auth: bad key"
    assert b.stopped is None
