"""The route gate shared through the database, for several worker processes (PostgreSQL).

Same contract as :class:`runner.gate.RouteGate`, but the request schedule and the 429 pause
live in the store (``route_state``), so N workers together stay under the route's rate.
"""

from __future__ import annotations

import anyio

from runner.gate import RATE_MARGIN
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
        """Pause the route for every worker (and this one at once, without a round trip)."""
        self._paused_until = max(self._paused_until, anyio.current_time() + seconds)
        await self._store.pause_route(self._route, seconds)

    async def admit(self) -> None:
        """Take the route's next slot in the shared schedule and wait for it."""
        while True:
            if (local := self.paused_for) > 0:
                await anyio.sleep(local)
            wait, paused = await self._store.take_rate_slot(self._route, self._interval)
            if paused <= 0:
                break
            # Another worker saw a 429: the slot was not taken; come back when it ends.
            self._paused_until = max(self._paused_until, anyio.current_time() + paused)
        await anyio.sleep(wait)
