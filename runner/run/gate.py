"""Per-route admission: request rate, a shared pause after 429s, and a stop switch.

Hold the rate limiter only around sending a request, never around a backoff sleep.

:class:`BaseGate` keeps what every gate does alike (the pause this process has seen, the stop
switch); :class:`RouteGate` takes its slots from a limiter in this process, and
:class:`runner.run.shared_gate.SharedGate` from a schedule in the database.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
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


def burst_size(rpm: int) -> int:
    """Requests a gate lets through back to back: a quarter second's worth, at least one.

    Providers enforce per-minute limits over short windows (a minute's quota sent at once is
    refused), so requests are spread out rather than sent in one go.
    """
    return max(1, math.floor(rpm * RATE_MARGIN / 60 / 4))


class BaseGate(ABC):
    """The pause and stop switch every gate keeps; subclasses say how slots are taken.

    Args:
        rpm: requests per minute allowed on the route.
    """

    def __init__(self, rpm: int) -> None:
        self.rpm = rpm
        self.stopped: str | None = None
        self._paused_until = 0.0

    async def start(self) -> None:
        return None

    @property
    def paused_for(self) -> float:
        """Seconds left of the longest pause this process knows of."""
        return max(0.0, self._paused_until - anyio.current_time())

    def stop(self, reason: str) -> None:
        if self.stopped is None:
            self.stopped = reason

    async def pause(self, seconds: float) -> None:
        # This process holds at once; sharing the pause further is the subclass's business.
        self._hold(seconds)
        await self._share_pause(seconds)

    async def admit(self) -> None:
        await self._wait_out_pause()
        await self._take_slot()

    def _hold(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, anyio.current_time() + seconds)

    async def _wait_out_pause(self) -> None:
        # Another 429 may extend the pause while we sleep, hence a loop rather than an event.
        while (wait := self.paused_for) > 0:  # noqa: ASYNC110
            await anyio.sleep(wait)

    @abstractmethod
    async def _share_pause(self, seconds: float) -> None:
        """Tell the route's other users of a pause this process has already taken."""

    @abstractmethod
    async def _take_slot(self) -> None:
        """Take one request's slot of the rate; return when the request may leave."""


class RouteGate(BaseGate):
    """Admission control for one route within this process.

    Args:
        rpm: requests per minute allowed on the route.
    """

    def __init__(self, rpm: int) -> None:
        super().__init__(rpm)
        burst = burst_size(rpm)
        self._limiter = AsyncLimiter(burst, burst / (rpm * RATE_MARGIN / 60))

    async def _share_pause(self, seconds: float) -> None:
        """Nobody else admits through this gate: the pause held here is the whole of it."""

    async def _take_slot(self) -> None:
        await self._limiter.acquire()
        # A 429 seen while queued at the limiter holds this request too.
        await self._wait_out_pause()
