"""One pace per route: two observes of one worker's gate overlapping (a 429's save, made at
once, while the once-a-second save still awaits its answer) must not leave the worker a
version ahead of the route's row. It then neither took up the next worker's save nor was
refused over it, and saved over another worker's backoff it never saw: the lost update the
compare-and-set is there to prevent."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from runner.models import Limit, RateLimits
from runner.run.pace_keeper import PACE_MAX_AGE_S
from runner.run.pacing import Observation
from runner.run.shared_gate import SharedGate
from runner.store import Store

pytestmark = pytest.mark.anyio
ROUTE = "sandbox-openai"
RPM = 1200


class HeldSave:
    """The store; the answer of the next save_pace is held, after its write committed, until
    ``release`` is set (the event loop resuming the other task first)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.armed = False
        self.entered = anyio.Event()
        self.release = anyio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def save_pace(self, *args: Any, **kwargs: Any) -> bool:
        saved = await self._store.save_pace(*args, **kwargs)
        if self.armed:
            self.armed = False
            self.entered.set()
            await self.release.wait()
        return saved


def seen(refused: bool = False, limit: int | None = None) -> Observation:
    at = anyio.current_time()
    limits = RateLimits(requests=Limit(limit=limit)) if limit else None
    return Observation(at=at, rate_limited=refused, sent_at=at - 1.0, limits=limits)


@pytest.mark.parametrize("overlap", [False, True], ids=["one-after-the-other", "overlapping"])
async def test_overlapping_observes_do_not_lose_another_workers_backoff(
    pg_stores: tuple[Store, Store], overlap: bool
) -> None:
    held = HeldSave(pg_stores[0])
    a = SharedGate(held, ROUTE, RPM)  # type: ignore[arg-type]
    b = SharedGate(pg_stores[1], ROUTE, RPM)
    await a.start()
    await b.start()
    store = pg_stores[0]
    if overlap:
        async with anyio.create_task_group() as tg:
            held.armed = True
            tg.start_soon(a.observe, seen(limit=900))  # the once-a-second save; answer held
            await held.entered.wait()
            await a.observe(seen(refused=True))  # another task's 429: saved at once
            held.release.set()
    else:  # the same two observes, the first done before the second
        await a.observe(seen(limit=900))
        await a.observe(seen(refused=True))
    row = await store.load_pace(ROUTE, PACE_MAX_AGE_S)
    assert row is not None
    assert a._keeper is not None
    assert a._keeper.seq <= row["seq"]  # never ahead of what the route holds
    await b.observe(seen())  # b takes up a's backoff
    await anyio.sleep(1.1)  # past that backoff's episode
    await b.observe(seen(refused=True))  # b refused: a slower backoff, saved at once
    row = await store.load_pace(ROUTE, PACE_MAX_AGE_S)
    assert row is not None
    b_backoff, b_rpm = row["backoff"], row["rpm"]
    # a's next answer, a second on, its headers teaching a pace (something to save): a
    # compares notes with the route's row and saves.
    await a.observe(seen(limit=1000))
    row = await store.load_pace(ROUTE, PACE_MAX_AGE_S)
    assert row is not None
    assert row.get("backoff") == b_backoff, "b's backoff was saved over by a, which never saw it"
    assert a.pace.rpm <= b_rpm * 1.05, "a paces faster than the backoff b saved"
