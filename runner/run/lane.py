"""A lane: everything one route needs inside a run (HTTP client, gate, adapter, retry policy)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import anyio
import httpx

from runner.http.client import ApiClient
from runner.routes import Route
from runner.run.gate import Gate
from runner.run.retry import RetryPolicy
from runner.run.sources import SourceLoader
from runner.shapes import ShapeAdapter


@dataclass(slots=True, kw_only=True)
class Lane:
    route: Route
    batch_ids: list[str]
    concurrency: int
    gate: Gate
    adapter: ShapeAdapter
    #: Carries the route's credentials: only ever used for the provider's own endpoints.
    client: ApiClient
    #: No credentials: for source URLs and result URLs on other hosts.
    fetch: httpx.AsyncClient
    loader: SourceLoader
    policy: RetryPolicy
    #: Job ids this process holds a lease on (queued in memory or in flight).
    held: set[int] = field(default_factory=set)
    #: Set whenever a job finishes, so an idle feeder looks for newly runnable work.
    wake: anyio.Event = field(default_factory=anyio.Event)

    def poke(self) -> None:
        self.wake.set()
        self.wake = anyio.Event()


@dataclass(slots=True)
class RunStats:
    """Live counters of a run, read by the progress display (no terminal code here)."""

    started: float = 0.0
    total: int = 0
    done_before: int = 0
    succeeded: int = 0
    failed: int = 0
    unknown: int = 0
    released: int = 0
    in_flight: int = 0
    attempts: int = 0
    retries_scheduled: int = 0
    spent_usd: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    stopped_routes: dict[str, str] = field(default_factory=dict)
    stopping: bool = False
    budget_stop: str | None = None

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed
