"""What a manifest would cost on a route: each line's range, and the totals of every line."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from runner.models import JobSpec
from runner.pricing.book import PriceBook
from runner.pricing.estimate import Estimate, estimate_job
from runner.pricing.priced_job import PricedJob
from runner.routes.catalog import Route


@dataclass(frozen=True, slots=True, kw_only=True)
class JobEstimate:
    """One manifest line's cost range."""

    id: str
    line: int
    estimate: Estimate


@dataclass(frozen=True, slots=True, kw_only=True)
class ManifestEstimate:
    """A manifest's cost range on a route: per job (the first rows) and in total."""

    route: str
    jobs: list[JobEstimate]
    count: int
    low: float
    typical: float
    high: float
    as_of: str
    sources: list[str]
    notes: list[str]


def estimate_manifest(
    book: PriceBook, route: Route, specs: Iterable[JobSpec], *, keep: int = 1000
) -> ManifestEstimate:
    """Price every line of ``specs`` on ``route``; keep the first ``keep`` rows for display.

    Totals cover every line; sources and notes are listed once each, in the order met.
    """
    rows: list[JobEstimate] = []
    totals = [0.0, 0.0, 0.0]
    sources: dict[str, None] = {}
    notes: dict[str, None] = {}
    count = 0
    as_of = ""
    for spec in specs:
        est = estimate_job(book, route, PricedJob.from_line(spec))
        count += 1
        totals = [totals[0] + est.low, totals[1] + est.typical, totals[2] + est.high]
        sources[est.source] = None
        notes.update(dict.fromkeys(est.notes))
        as_of = est.as_of.isoformat()
        if len(rows) < keep:
            rows.append(JobEstimate(id=spec.ext_id, line=spec.line, estimate=est))
    return ManifestEstimate(
        route=route.name,
        jobs=rows,
        count=count,
        low=round(totals[0], 6),
        typical=round(totals[1], 6),
        high=round(totals[2], 6),
        as_of=as_of,
        sources=list(sources),
        notes=list(notes),
    )
