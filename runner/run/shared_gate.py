"""The route gate shared through the database, for several worker processes (PostgreSQL).

Same contract as :class:`runner.run.gate.RouteGate`, but the request schedule and the 429 pause
live in the store (``route_state``), so N workers together stay under the route's rate.
"""

from __future__ import annotations

import math

import anyio

from runner.run.gate import RATE_MARGIN
from runner.store import Store


class SharedGate:
    """Admission for one route across every worker using the same database.

    Args:
        store: the shared store.
        route: the route's name (its ``route_state`` row).
        rpm: requests per minute for the route as a whole.
    """

    def __init__(self, store: Store, route: str, rpm: int) -> None:
        self.rpm = rpm
        self._store = store
        self._route = route
        self._interval = 60.0 / (rpm * RATE_MARGIN)
        # The burst RouteGate allows (a quarter second's worth): a worker that stalls for a
        # moment (a busy event loop, a slow commit) leaves a gap in the schedule that the
        # others may then fill, so hiccups do not cost the route its rate.
        burst = max(1, math.floor(rpm * RATE_MARGIN / 60 / 4))
        self._tolerance = (burst - 1) * self._interval
        self._paused_until = 0.0
        self.stopped: str | None = None

    async def start(self) -> None:
        await self._store.ensure_route_state(self._route)

    @property
    def paused_for(self) -> float:
        return max(0.0, self._paused_until - anyio.current_time())

    def stop(self, reason: str) -> None:
        if self.stopped is None:
            self.stopped = reason

    async def pause(self, seconds: float) -> None:
        # This worker stops at once; the others learn it from their next slot request.
        self._paused_until = max(self._paused_until, anyio.current_time() + seconds)
        await self._store.pause_route(self._route, seconds)

    async def admit(self) -> None:
        while True:
            if (local := self.paused_for) > 0:
                await anyio.sleep(local)
            wait, paused = await self._store.take_rate_slot(
                self._route, self._interval, self._tolerance
            )
            if paused <= 0:
                break
            # Another worker saw a 429: the slot was not taken; come back when it ends.
            self._paused_until = max(self._paused_until, anyio.current_time() + paused)
        await anyio.sleep(wait)
