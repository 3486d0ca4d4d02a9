"""Per-route admission: request rate, a shared pause after 429s, and a stop switch.

Hold the rate limiter only around sending a request, never around a backoff sleep.
"""

from __future__ import annotations

import math
from typing import Protocol

import anyio
from aiolimiter import AsyncLimiter

#: Pace a hair under the configured rate: providers measure arrival times, which jitter.
RATE_MARGIN = 0.99


class Gate(Protocol):
    """Admission control for one route: :class:`RouteGate` in one process, or
    :class:`runner.run.shared_gate.SharedGate` across every worker sharing a PostgreSQL database.
    """

    rpm: int
    stopped: str | None

    async def start(self) -> None:
        """Prepare shared state (nothing for a local gate)."""

    async def admit(self) -> None:
        """Wait out any pause, then take one request's slot of the route's rate."""

    async def pause(self, seconds: float) -> None:
        """Hold every request on the route for ``seconds`` (a 429's ``Retry-After``)."""

    def stop(self, reason: str) -> None:
        """Stop the route for this run (bad key, no quota): nothing more is sent."""


class RouteGate:
    """Admission control for one route within this process.

    Args:
        rpm: requests per minute allowed on the route.
    """

    def __init__(self, rpm: int) -> None:
        self.rpm = rpm
        per_second = rpm * RATE_MARGIN / 60
        # A quarter second's worth of burst at most: providers enforce per-minute limits over
        # short windows (a minute's quota sent at once is refused), so we spread requests out.
        burst = max(1, math.floor(per_second / 4))
        self._limiter = AsyncLimiter(burst, burst / per_second)
        self._paused_until = 0.0
        self.stopped: str | None = None

    async def start(self) -> None:
        return None

    async def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, anyio.current_time() + seconds)

    @property
    def paused_for(self) -> float:
        return max(0.0, self._paused_until - anyio.current_time())

    def stop(self, reason: str) -> None:
        if self.stopped is None:
            self.stopped = reason

    async def admit(self) -> None:
        await self._wait_out_pause()
        await self._limiter.acquire()
        await self._wait_out_pause()

    async def _wait_out_pause(self) -> None:
        # Another 429 may extend the pause while we sleep, hence a loop rather than an event.
        while (wait := self.paused_for) > 0:  # noqa: ASYNC110
            await anyio.sleep(wait)
