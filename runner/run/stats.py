"""Run statistics: a live record, fed by the job runner's events and read by the progress display.

The job runner never adds to a counter itself: each job's turn ends in one
:class:`JobSettled` record handed to :meth:`RunStats.record`, and each request is counted by
:meth:`RunStats.attempt` while it is in flight.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from runner.models import JobState, Outcome
from runner.run.pacing import Pace


class Paced(Protocol):
    """A route's gate as the progress line reads it (:class:`runner.run.gate.Gate`)."""

    @property
    def pace(self) -> Pace: ...

    @property
    def paused_for(self) -> float:
        """Seconds left of the longest pause the gate knows of (another worker's too)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutePause:
    """A pause of every request on a route, as the progress line shows it.

    Attributes:
        until: when it ends, on ``anyio.current_time()``'s clock.
        reason: what it is for: ``"429 Retry-After"``, ``"429 backoff"``,
            ``"429 rate-limit reset"``, ``"503 Retry-After"``.
    """

    until: float
    reason: str

    def left(self, now: float) -> float:
        """Seconds of the pause still to run at ``now`` (0 once it is over)."""
        return max(0.0, self.until - now)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSettled:
    """How one job's turn in a run ended.

    Attributes:
        route: the route's name.
        state: the job's next state: ``succeeded``, ``waiting`` (a retry is scheduled),
            ``failed``, or ``queued`` (released).
        outcome: the outcome class of the attempt the job made, or ``None`` when nothing was
            sent (it could not be built or priced, or went back to the queue first).
        spent_usd: what the attempt adds to the run's expected spend.
        route_stopped: the route's stop reason, when this attempt stopped it.
        budget_stop: why the run stops claiming, when the job went back because a budget
            has no room for it.
        paused: the route's pause, when this attempt's answer paused it.
    """

    route: str
    state: JobState
    outcome: Outcome | None = None
    spent_usd: float = 0.0
    route_stopped: str | None = None
    budget_stop: str | None = None
    paused: RoutePause | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteProgress:
    """A remote batch as the progress line shows it.

    Attributes:
        route: its route.
        status: the provider's status (``validating``, ``in_progress``, ``finalizing``, …),
            or our step while it is not on the provider yet.
        lines: its lines.
        completed: lines the provider reports done.
        failed: lines the provider reports failed.
        since: when it was submitted (``anyio.current_time()``'s clock).
    """

    route: str
    status: str
    lines: int
    completed: int = 0
    failed: int = 0
    since: float = 0.0


@dataclass(slots=True)
class RunStats:
    """Live counters of a run, read by the progress display (no terminal code here)."""

    started: float = 0.0
    total: int = 0
    done_before: int = 0
    succeeded: int = 0
    failed: int = 0
    released: int = 0
    in_flight: int = 0
    attempts: int = 0
    retries_scheduled: int = 0
    spent_usd: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    stopped_routes: dict[str, str] = field(default_factory=dict)
    stopping: bool = False
    budget_stop: str | None = None
    #: The latest pause each route was given (it ends where a later, longer one says).
    pauses: dict[str, RoutePause] = field(default_factory=dict)
    #: Each route's gate: its current pace and why.
    gates: dict[str, Paced] = field(default_factory=dict)
    #: The remote batches this run drives, by our id (gone once applied).
    remote: dict[str, RemoteProgress] = field(default_factory=dict)
    #: Remote batches this run gave up as uncollected, by our id: why, and what to do.
    uncollected: dict[str, str] = field(default_factory=dict)

    @property
    def finished(self) -> int:
        """Jobs this run brought to an end (succeeded or failed)."""
        return self.succeeded + self.failed

    def record(self, event: JobSettled) -> None:
        """Count how one job's turn ended."""
        if event.outcome is not None:
            self.outcomes[event.outcome.value] += 1
        self.spent_usd += event.spent_usd
        if event.state is JobState.SUCCEEDED:
            self.succeeded += 1
        elif event.state is JobState.FAILED:
            self.failed += 1
        elif event.state is JobState.WAITING:
            self.retries_scheduled += 1
        elif event.state is JobState.QUEUED:
            self.released += 1
        if event.route_stopped is not None:
            # The first reason a route stopped for is the one the run reports.
            self.stopped_routes.setdefault(event.route, event.route_stopped)
        if event.budget_stop is not None:
            self.budget_stop = event.budget_stop
        if event.paused is not None:
            known = self.pauses.get(event.route)
            if known is None or event.paused.until >= known.until:
                self.pauses[event.route] = event.paused

    def attempt(self) -> _InFlight:
        """Count one request, in flight until the block ends (however it ends)."""
        self.attempts += 1
        self.in_flight += 1
        return _InFlight(self)


class _InFlight:
    """:meth:`RunStats.attempt`'s block: a class, not a ``contextmanager`` generator (1.1 ->
    0.2 us, once a job)."""

    __slots__ = ("_stats",)

    def __init__(self, stats: RunStats) -> None:
        self._stats = stats

    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        self._stats.in_flight -= 1
