"""What a comparison costs on each route, and how much of it that route's batch already holds.

A comparison's jobs are its own (their keys fold in the comparison's name), so a new name buys
every line afresh on every route and re-running the same name sends nothing again. Before
anything is sent each route is priced on every line of the manifest it is sent (the fitted one
where fields were dropped or adapted), next to the lines its batch ``<name>-<route>`` already
holds from an earlier run of the same comparison.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.errors import Problem, UsageError, ValidationFailed
from runner.manifest import scan_manifest
from runner.models import JobSpec
from runner.pricing.book import PriceBook
from runner.pricing.manifest_estimate import estimate_manifest
from runner.routes.catalog import Catalog, Route
from runner.store import BatchInfo, EnqueueResult


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


def _specs(manifest: Path, route: Route, catalog: Catalog) -> Iterator[JobSpec]:
    for item in scan_manifest(manifest, route, catalog):
        if isinstance(item, Problem):
            raise ValidationFailed([item])
        yield item


def estimate_route(
    *,
    comparison: str,
    manifest: Path,
    route: Route,
    catalog: Catalog,
    book: PriceBook,
    held: BatchInfo | None,
    waiting: int = 0,
) -> RouteEstimate:
    """Price every line of ``manifest`` on ``route``. Blocking; run it in a worker thread.

    Raises:
        UsageError: the route's batch holds more jobs than the manifest has lines, or some
            but not all of them: it is not this comparison of this manifest.
    """
    priced = estimate_manifest(book, route, _specs(manifest, route, catalog), keep=0)
    name = batch_name(comparison, route.name)
    count = held.job_count if held is not None else 0
    if count not in (0, priced.count):
        raise UsageError(
            f"batch {name!r} holds {count} job(s) but the manifest has {priced.count} line(s): "
            "the manifest changed since this comparison first ran, or the batch is not a "
            "comparison's; nothing was sent. Give the comparison a new --name."
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


def check_columns(estimates: Mapping[str, RouteEstimate], results: Sequence[EnqueueResult]) -> None:
    """After enqueueing: every route's batch holds exactly the manifest's lines.

    Raises:
        UsageError: a batch holds other jobs too (a batch of that name made by ``imagerun
            submit``, or a line edited since the comparison first ran); nothing was sent.
    """
    wrong = [r.batch for r in results if r.batch.job_count != estimates[r.batch.route].lines]
    if not wrong:
        return
    held = ", ".join(
        f"{b.name!r} holds {b.job_count} job(s) for {estimates[b.route].lines} line(s)"
        for b in wrong
    )
    queued = [r.batch.name for r in results if r.added]
    undo = " ".join(f"`imagerun cancel {name}`" for name in queued)
    raise UsageError(
        f"{held}: jobs that are not this comparison's (a batch submitted under that name, or "
        "a line edited since this comparison first ran). Nothing was sent"
        + (f"; the jobs just queued stay queued until {undo}" if queued else "")
        + ". Give the comparison a new --name."
    )
