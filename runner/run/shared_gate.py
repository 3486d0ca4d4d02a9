"""The route gate shared through the database, for several worker processes (PostgreSQL).

Same contract as :class:`runner.run.gate.RouteGate`, but the request schedule and the 429 pause
live in the store (``route_state``), so N workers together stay under the route's rate.
"""

from __future__ import annotations

import anyio

from runner.abc import RouteState
from runner.run.gate import RATE_MARGIN, BaseGate, burst_size


class SharedGate(BaseGate):
    """Admission for one route across every worker using the same database.

    Args:
        store: the shared store.
        route: the route's name (its ``route_state`` row).
        rpm: requests per minute for the route as a whole.
    """

    def __init__(self, store: RouteState, route: str, rpm: int) -> None:
        super().__init__(rpm)
        self._store = store
        self._route = route
        self._interval = 60.0 / (rpm * RATE_MARGIN)
        # The burst RouteGate allows: a worker that stalls for a moment (a busy event loop, a
        # slow commit) leaves a gap in the schedule that the others may then fill, so hiccups
        # do not cost the route its rate.
        self._tolerance = (burst_size(rpm) - 1) * self._interval

    async def start(self) -> None:
        await self._store.ensure_route_state(self._route)

    async def _share_pause(self, seconds: float) -> None:
        # The others learn of it from their next slot request.
        await self._store.pause_route(self._route, seconds)

    async def _take_slot(self) -> None:
        while True:
            wait, paused = await self._store.take_rate_slot(
                self._route, self._interval, self._tolerance
            )
            if paused <= 0:
                break
            # Another worker saw a 429: the slot was not taken; come back when it ends.
            self._hold(paused)
            await self._wait_out_pause()
        await anyio.sleep(wait)
