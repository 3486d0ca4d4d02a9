"""The byte budget large responses reserve from: it bounds what they hold at once, cuts an
oversized reservation to the whole budget, and gets its bytes back however a holder ends."""

from __future__ import annotations

import anyio
import pytest

from runner.run.memory import COPIES, SMALL_BODY, UNKNOWN_LENGTH, ByteBudget

pytestmark = pytest.mark.anyio

MB = 1024 * 1024


def test_a_small_body_costs_nothing() -> None:
    budget = ByteBudget(256 * MB)
    assert budget.cost(0) == 0
    assert budget.cost(SMALL_BODY - 1) == 0


def test_a_large_body_costs_its_copies() -> None:
    budget = ByteBudget(256 * MB)
    assert budget.cost(SMALL_BODY) == COPIES * SMALL_BODY
    assert budget.cost(20 * MB) == COPIES * 20 * MB


def test_a_body_of_unknown_length_costs_the_unknown_allowance() -> None:
    assert ByteBudget(256 * MB).cost(None) == COPIES * UNKNOWN_LENGTH


def test_an_oversized_reservation_is_cut_to_the_whole_budget() -> None:
    budget = ByteBudget(10 * MB)
    assert budget.cost(100 * MB) == 10 * MB
    assert budget.cost(None) == 10 * MB


async def test_nothing_to_reserve_returns_at_once() -> None:
    budget = ByteBudget(MB)
    with anyio.fail_after(1):
        assert await budget.acquire(0) == 0
        await budget.release(0)


async def test_acquire_waits_for_room_until_a_release() -> None:
    budget = ByteBudget(10 * MB)
    assert await budget.acquire(6 * MB) == 6 * MB
    got: list[int] = []

    async def second() -> None:
        got.append(await budget.acquire(6 * MB))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(second)
            await anyio.wait_all_tasks_blocked()
            assert got == []  # 12 MB would not fit in 10
            await budget.release(6 * MB)
    assert got == [6 * MB]


async def test_an_oversized_reservation_runs_alone() -> None:
    """Cut to the budget, a huge body waits for every other holder, then holds it all."""
    budget = ByteBudget(10 * MB)
    await budget.acquire(MB)
    huge = budget.cost(500 * MB)
    order: list[str] = []

    async def big() -> None:
        await budget.acquire(huge)
        order.append("big")

    async def small() -> None:
        await budget.acquire(MB)
        order.append("small")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(big)
            await anyio.wait_all_tasks_blocked()
            assert order == []
            await budget.release(MB)
            await anyio.wait_all_tasks_blocked()
            assert order == ["big"]
            tg.start_soon(small)
            await anyio.wait_all_tasks_blocked()
            assert order == ["big"]  # the whole budget is held
            await budget.release(huge)
    assert order == ["big", "small"]


async def test_a_cancelled_wait_takes_no_bytes() -> None:
    budget = ByteBudget(10 * MB)
    await budget.acquire(8 * MB)
    with anyio.move_on_after(0.05) as scope:
        await budget.acquire(8 * MB)
    assert scope.cancelled_caught
    await budget.release(8 * MB)
    with anyio.fail_after(1):
        # Had the cancelled wait kept its 8 MB, the whole budget would not be free now.
        assert await budget.acquire(10 * MB) == 10 * MB


async def test_a_holder_cancelled_mid_read_still_gives_its_bytes_back() -> None:
    """The release is shielded: a cancelled attempt's ``finally`` returns what it held."""
    budget = ByteBudget(10 * MB)
    with anyio.CancelScope() as scope:
        held = await budget.acquire(10 * MB)
        try:
            scope.cancel()
            await anyio.sleep(1)  # the body read, cut short
        finally:
            await budget.release(held)
    assert scope.cancelled_caught
    with anyio.fail_after(1):
        assert await budget.acquire(10 * MB) == 10 * MB
