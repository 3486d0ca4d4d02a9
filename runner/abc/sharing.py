"""What workers share through the database: a route's schedule, pause and learned pace, and
budget grants (the rate gates and the run's spending use them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from runner.store.records import RateSlot


@runtime_checkable
class RouteState(Protocol):
    """A route's request schedule and 429 pause, shared by every worker on the database."""

    async def ensure_route_state(self, route: str) -> None:
        """Create the route's shared state if it does not exist yet."""

    async def take_rate_slot(
        self,
        route: str,
        interval: float,
        tolerance: float = 0.0,
        *,
        paced_within: float | None = None,
        allowance: float = 0.0,
    ) -> RateSlot:
        """Reserve the route's next request slot, ``interval`` seconds after the last one
        (``tolerance``: how early a slot may be used, GCRA's burst tolerance). With
        ``paced_within``, at least the interval of the route's learned pace saved no longer
        than that many seconds ago (see :meth:`RoutePace.save_pace`). ``allowance`` is added
        to whichever interval is kept to (the asking worker's margin for late arrivals).

        Returns:
            the slot: seconds from the database's clock (``clock``) to wait before sending;
            seconds the route stays paused after a 429 (when positive the slot was *not*
            taken: wait and ask again).
        """

    async def pause_route(self, route: str, seconds: float) -> None:
        """Pause the route for everyone (a 429's ``Retry-After``); pauses only ever extend."""


@runtime_checkable
class RoutePace(Protocol):
    """A route's learned pace, kept between runs and shared by every worker on the database."""

    async def load_pace(self, route: str, max_age_s: float) -> dict[str, Any] | None:
        """The pace saved for ``route`` no longer than ``max_age_s`` ago, or ``None``."""

    async def save_pace(
        self,
        route: str,
        pace: dict[str, Any],
        *,
        after: int | None = None,
        max_age_s: float | None = None,
    ) -> bool:
        """Keep ``pace`` as the route's learned pace (its ``route_state`` row must exist).

        With ``after``, only over the saved pace whose ``seq`` is ``after`` (none saved: 0)
        or, given ``max_age_s``, one older than that; ``False`` when another was saved
        meanwhile."""

    async def route_paces(self) -> dict[str, dict[str, Any]]:
        """Every route's saved pace, with ``learned_at`` (ISO 8601), by route name."""

    async def count_passed(self, route: str, passed: int) -> int:
        """Add ``passed`` successful requests to the route's running count (every worker's
        together) and return the count (its ``route_state`` row must exist)."""


@runtime_checkable
class BudgetGrants(Protocol):
    """Shares of a batch budget, granted to workers by the database."""

    async def grant_budget(
        self,
        batch_id: str,
        worker_id: str,
        want_usd: float,
        *,
        at_least: float = 0.0,
        hold_s: float,
    ) -> float:
        """Grant ``worker_id`` up to ``want_usd`` more of ``batch_id``'s budget for ``hold_s``;
        returns it (0 when less than ``at_least`` is left; all of it without a budget)."""

    async def renew_budget_grants(self, worker_id: str, hold_s: float) -> list[str]:
        """Extend ``worker_id``'s grants by ``hold_s``; returns the batches whose grant lapsed
        (cut to what was spent: the worker must drop its unspent share)."""


@runtime_checkable
class Dialect(Protocol):
    """Which database this is, ``sqlite`` or ``postgresql`` (state shared between worker
    processes pays off only on a server)."""

    @property
    def dialect(self) -> str: ...
