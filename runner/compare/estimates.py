"""What a comparison costs on each route, and how much of it that route's batch already holds.

A comparison's jobs are its own (their keys fold in the comparison's name), so a new name buys
every line afresh on every route and re-running the same name sends nothing again. Before
anything is sent each route is priced on every line of the manifest it is sent (the fitted one
where fields were dropped or adapted), next to the lines its batch ``<name>-<route>`` already
holds from an earlier run of the same comparison.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.errors import Problem, UsageError, ValidationFailed
from runner.manifest import scan_manifest
from runner.models import JobSpec
from runner.pricing.book import PriceBook
from runner.pricing.manifest_estimate import estimate_manifest
from runner.routes.catalog import Catalog, Route
from runner.store import BatchInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteEstimate:
    """One route's price for the comparison, before anything is sent.

    Attributes:
        route: the route.
        batch: the comparison's batch on it (``<name>-<route>``).
        lines: manifest lines the route is sent (every one: the column holds each).
        held: lines that batch holds already (bought or queued by an earlier run).
        waiting: of those, the ones not sent yet (queued by ``--no-run``, or due a retry).
        low, typical, high: the estimate for every line on this route, in USD.
        as_of: the date of the prices used.
    """

    route: str
    batch: str
    lines: int
    held: int
    waiting: int
    low: float
    typical: float
    high: float
    as_of: str

    @property
    def to_add(self) -> int:
        """Lines this run adds to the route's batch (and so will send)."""
        return max(self.lines - self.held, 0)

    @property
    def to_send(self) -> int:
        """Lines a run of the comparison sends now: the added ones and the waiting ones."""
        return self.to_add + self.waiting

    def to_json(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "batch": self.batch,
            "lines": self.lines,
            "held": self.held,
            "waiting": self.waiting,
            "to_add": self.to_add,
            "to_send": self.to_send,
            "low": self.low,
            "typical": self.typical,
            "high": self.high,
            "prices_as_of": self.as_of,
        }


def batch_name(comparison: str, route: str) -> str:
    """The name of a comparison's batch on ``route``."""
    return f"{comparison}-{route}"


def _specs(
    manifest: Path, route: Route, catalog: Catalog, comparison: str, keys: set[str]
) -> Iterator[JobSpec]:
    """The comparison's jobs on ``route``, their keys collected into ``keys`` on the way."""
    for item in scan_manifest(manifest, route, catalog, key_seed=comparison):
        if isinstance(item, Problem):
            raise ValidationFailed([item])
        keys.add(item.key)
        yield item


def estimate_route(
    *,
    comparison: str,
    manifest: Path,
    route: Route,
    catalog: Catalog,
    book: PriceBook,
    held: BatchInfo | None,
    held_keys: frozenset[str] = frozenset(),
    waiting: int = 0,
) -> RouteEstimate:
    """Price every line of ``manifest`` on ``route``. Blocking; run it in a worker thread.

    ``held`` is the comparison's batch on the route if it exists, holding ``held_keys``.

    Raises:
        UsageError: that batch holds jobs other than this comparison's lines (a batch
            submitted under that name, or a line edited since the comparison first ran).
    """
    keys: set[str] = set()
    priced = estimate_manifest(
        book, route, _specs(manifest, route, catalog, comparison, keys), keep=0
    )
    name = batch_name(comparison, route.name)
    count = held.job_count if held is not None else 0
    if count and (held_keys != keys or count != len(keys)):
        raise UsageError(
            f"batch {name!r} holds {count} job(s) that are not exactly this comparison's "
            f"{priced.count} line(s): the manifest changed since the comparison first ran, or "
            "the batch was submitted under that name; nothing was sent. Give the comparison a "
            "new --name."
        )
    return RouteEstimate(
        route=route.name,
        batch=name,
        lines=priced.count,
        held=count,
        waiting=waiting,
        low=priced.low,
        typical=priced.typical,
        high=priced.high,
        as_of=priced.as_of,
    )
