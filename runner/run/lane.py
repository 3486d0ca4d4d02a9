"""A lane: everything one route needs inside a run (HTTP client, gate, adapter, retry policy)."""

from __future__ import annotations

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
