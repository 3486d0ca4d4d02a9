"""What a manifest would cost on a route: each line's range, and the totals of every line.

On a token route that has a Batch API counterpart (``openai`` and ``openai-batch``, or their
sandbox mirrors) the same lines are priced on both, so the synchronous and the batch cost
read side by side, per model and in total (:class:`BatchComparison`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from runner.models import JobSpec, Shape
from runner.pricing.book import PriceBook
from runner.pricing.estimate import Estimate, estimate_job
from runner.pricing.priced_job import PricedJob
from runner.routes.catalog import Catalog, Route


@dataclass(frozen=True, slots=True, kw_only=True)
class JobEstimate:
    """One manifest line's cost range."""

    id: str
    line: int
    estimate: Estimate


@dataclass(frozen=True, slots=True, kw_only=True)
class Totals:
    """A sum of cost ranges over some lines, in USD."""

    jobs: int = 0
    low: float = 0.0
    typical: float = 0.0
    high: float = 0.0

    def plus(self, est: Estimate) -> Totals:
        """These totals with one more line."""
        return Totals(
            jobs=self.jobs + 1,
            low=self.low + est.low,
            typical=self.typical + est.typical,
            high=self.high + est.high,
        )

    def rounded(self) -> Totals:
        """Rounded to the micro-dollar, for reading."""
        return Totals(
            jobs=self.jobs,
            low=round(self.low, 6),
            typical=round(self.typical, 6),
            high=round(self.high, 6),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelCosts:
    """One image model's lines, priced synchronously and through the Batch API."""

    model: str
    synchronous: Totals
    batch: Totals


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchComparison:
    """The same lines on a synchronous route and on its Batch API counterpart.

    Attributes:
        synchronous_route: the route answering each request as it is sent.
        batch_route: the ``batch``-shape route (its lines answered within the batch window).
        batch_discount: what the batch route multiplies token prices by.
        per_model: one entry per image model the lines run, in the order first met.
    """

    synchronous_route: str
    batch_route: str
    batch_discount: float
    synchronous: Totals
    batch: Totals
    per_model: list[ModelCosts]


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
    #: Synchronous beside batch, when the route has a Batch API counterpart.
    comparison: BatchComparison | None = None


def batch_counterpart(catalog: Catalog, route: Route) -> Route | None:
    """The route that runs the same lines the other way: through the Batch API or not.

    For a token route of the ``images`` or ``responses`` shape, the ``batch`` route of the
    same provider, endpoint, price table and multiplier; for a ``batch`` route, the ``images``
    route it mirrors. ``None`` when there is none (per-call gateways, other providers). The
    first match in catalog order wins (built-in routes come before their aliases).
    """
    if route.billing != "token" or route.shape is Shape.CHAT:
        return None
    wanted = Shape.IMAGES if route.shape is Shape.BATCH else Shape.BATCH
    for other in catalog.routes.values():
        if (
            other.shape is wanted
            and other.billing == "token"
            and other.provider == route.provider
            and other.base_url == route.base_url
            and other.price_table == route.price_table
            and other.price_multiplier == route.price_multiplier
        ):
            return other
    return None


@dataclass(slots=True)
class _Pairing:
    """Running sums of the synchronous / batch comparison, in all and per model."""

    synchronous: Route
    batch: Route
    #: (synchronous, batch) totals by model, and for every model under ``None``.
    sums: dict[str | None, tuple[Totals, Totals]] = field(default_factory=dict)

    @classmethod
    def of(cls, route: Route, counterpart: Route) -> _Pairing:
        if route.shape is Shape.BATCH:
            return cls(counterpart, route)
        return cls(route, counterpart)

    def add(self, book: PriceBook, route: Route, job: PricedJob, est: Estimate) -> None:
        on_sync = est if route is self.synchronous else estimate_job(book, self.synchronous, job)
        on_batch = est if route is self.batch else estimate_job(book, self.batch, job)
        for key in (None, job.model_on(route)):
            sync, batch = self.sums.get(key, (Totals(), Totals()))
            self.sums[key] = (sync.plus(on_sync), batch.plus(on_batch))

    def result(self) -> BatchComparison:
        everything = self.sums.get(None, (Totals(), Totals()))
        return BatchComparison(
            synchronous_route=self.synchronous.name,
            batch_route=self.batch.name,
            batch_discount=self.batch.batch_discount,
            synchronous=everything[0].rounded(),
            batch=everything[1].rounded(),
            per_model=[
                ModelCosts(model=name, synchronous=s.rounded(), batch=b.rounded())
                for name, (s, b) in self.sums.items()
                if name is not None
            ],
        )


def estimate_manifest(
    book: PriceBook,
    route: Route,
    specs: Iterable[JobSpec],
    *,
    keep: int = 1000,
    counterpart: Route | None = None,
) -> ManifestEstimate:
    """Price every line of ``specs`` on ``route``; keep the first ``keep`` rows for display.

    Totals cover every line; sources and notes are listed once each, in the order met. With
    a ``counterpart`` (:func:`batch_counterpart`) every line is priced on it too.
    """
    rows: list[JobEstimate] = []
    totals = Totals()
    pairing = _Pairing.of(route, counterpart) if counterpart is not None else None
    sources: dict[str, None] = {}
    notes: dict[str, None] = {}
    as_of = ""
    for spec in specs:
        job = PricedJob.from_line(spec)
        est = estimate_job(book, route, job)
        totals = totals.plus(est)
        if pairing is not None:
            pairing.add(book, route, job, est)
        sources[est.source] = None
        notes.update(dict.fromkeys(est.notes))
        as_of = est.as_of.isoformat()
        if len(rows) < keep:
            rows.append(JobEstimate(id=spec.ext_id, line=spec.line, estimate=est))
    total = totals.rounded()
    return ManifestEstimate(
        route=route.name,
        jobs=rows,
        count=total.jobs,
        low=total.low,
        typical=total.typical,
        high=total.high,
        as_of=as_of,
        sources=list(sources),
        notes=list(notes),
        comparison=pairing.result() if pairing is not None else None,
    )
