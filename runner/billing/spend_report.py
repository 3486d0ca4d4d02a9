"""``imagerun costs``: spend by route, outcome and charge status; failure charges expected vs
observed; what is still unknown; and repricing with the current price book."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from runner.abc import Costs
from runner.errors import ConfigError
from runner.models import ChargeStatus, Outcome
from runner.pricing import PriceBook, reprice
from runner.routes import Catalog
from runner.store import BatchInfo
from runner.store.charges import ChargeObservation
from runner.store.costs import CostRow, MismatchRow, RemoteCostRow


@dataclass(frozen=True, slots=True, kw_only=True)
class FailureCharge:
    """One failure class on one route: the documented policy, what was seen, and our ledger."""

    route: str
    outcome: str
    expected: ChargeStatus | None
    observed: ChargeObservation | None
    #: Ledger attempts of this class by charge status.
    attempts: dict[str, int]

    @property
    def agrees(self) -> bool | None:
        if self.observed is None or self.expected is None:
            return None
        return self.observed.charge_status is self.expected


@dataclass(frozen=True, slots=True, kw_only=True)
class RepriceSummary:
    before_usd: float
    after_usd: float
    attempts: int
    changed: int
    skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteSpend:
    """One route's spend: charged, possibly charged, and (on a batch route) what the same
    attempts cost at the synchronous price."""

    route: str
    attempts: int
    charged_usd: float
    unknown_usd: float
    #: What the route multiplies token prices by for being a Batch API route (1: none).
    batch_discount: float = 1.0

    @property
    def synchronous_usd(self) -> float | None:
        """Charged plus possibly charged, at the synchronous price; ``None`` off batch routes."""
        if self.batch_discount in (0.0, 1.0):
            return None
        return round((self.charged_usd + self.unknown_usd) / self.batch_discount, 6)


@dataclass(frozen=True, slots=True, kw_only=True)
class CostReport:
    batches: list[BatchInfo]
    rows: list[CostRow]
    failures: list[FailureCharge]
    reprice: RepriceSummary | None = None
    #: Images kept (and paid for) though not the size or format asked, by route.
    mismatched: list[MismatchRow] = field(default_factory=list)
    #: Spend by route, in route order.
    routes: list[RouteSpend] = field(default_factory=list)
    #: The remote batches (Batch API) of the scope, oldest first, with their lines' cost.
    remote: list[RemoteCostRow] = field(default_factory=list)

    def total(self, status: ChargeStatus) -> float:
        return round(sum(r.cost_usd for r in self.rows if r.charge_status is status), 6)

    def count(self, status: ChargeStatus) -> int:
        return sum(r.attempts for r in self.rows if r.charge_status is status)

    def to_json(self) -> dict[str, Any]:
        return {
            "batches": [{"id": b.id, "name": b.name, "route": b.route} for b in self.batches],
            "charged_usd": self.total(ChargeStatus.CHARGED),
            "unknown": {
                "attempts": self.count(ChargeStatus.UNKNOWN),
                "possible_usd": self.total(ChargeStatus.UNKNOWN),
            },
            "not_charged": {"attempts": self.count(ChargeStatus.NOT_CHARGED)},
            "rows": [_row_json(r) for r in self.rows],
            "by_route": [
                {
                    "route": r.route,
                    "attempts": r.attempts,
                    "charged_usd": r.charged_usd,
                    "unknown_usd": r.unknown_usd,
                    "batch_discount": r.batch_discount,
                    "synchronous_usd": r.synchronous_usd,
                }
                for r in self.routes
            ],
            "remote_batches": [_remote_json(rb) for rb in self.remote],
            "failure_charges": [_failure_json(f) for f in self.failures],
            "mismatched": [
                {
                    "route": m.route,
                    "images": m.images,
                    "attempts": m.attempts,
                    "cost_usd": m.cost_usd,
                }
                for m in self.mismatched
            ],
            "reprice": None
            if self.reprice is None
            else {
                "before_usd": self.reprice.before_usd,
                "after_usd": self.reprice.after_usd,
                "attempts": self.reprice.attempts,
                "changed": self.reprice.changed,
                "skipped": self.reprice.skipped,
            },
        }


def _row_json(r: CostRow) -> dict[str, Any]:
    return {
        "route": r.route,
        "outcome": r.outcome,
        "charge_status": r.charge_status.value,
        "evidence": r.evidence.value,
        "attempts": r.attempts,
        "expected_usd": r.expected_usd,
        "observed_usd": r.observed_usd if r.observed else None,
        "cost_usd": r.cost_usd,
    }


def _remote_json(rb: RemoteCostRow) -> dict[str, Any]:
    return {
        "id": rb.id,
        "remote_id": rb.remote_id,
        "route": rb.route,
        "status": rb.status,
        "lines": rb.lines,
        "ok": rb.ok,
        "expected_usd": rb.expected_usd,
        "cost_usd": rb.cost_usd,
    }


def _failure_json(f: FailureCharge) -> dict[str, Any]:
    obs = f.observed
    return {
        "route": f.route,
        "outcome": f.outcome,
        "expected": f.expected.value if f.expected else None,
        "observed": None
        if obs is None
        else {
            "charge_status": obs.charge_status.value,
            "evidence": obs.evidence.value,
            "usd": obs.observed_usd,
            "at": obs.observed_at.isoformat(),
            "attempt_id": obs.attempt_id,
        },
        "agrees": f.agrees,
        "attempts": f.attempts,
    }


async def cost_report(
    store: Costs,
    catalog: Catalog,
    book: PriceBook,
    batches: Sequence[BatchInfo],
    *,
    all_batches: bool,
    do_reprice: bool = False,
) -> CostReport:
    """The ledger's money for ``batches`` (every attempt when ``all_batches``)."""
    ids = None if all_batches else [b.id for b in batches]
    summary = await reprice_attempts(store, catalog, book, ids) if do_reprice else None
    rows = await store.cost_rows(ids)
    routes = sorted({r.route for r in rows} | {b.route for b in batches})
    observed = await store.observations(routes)
    return CostReport(
        batches=list(batches),
        rows=rows,
        failures=_failure_charges(catalog, rows, observed),
        reprice=summary,
        mismatched=await store.mismatch_rows(ids),
        routes=_route_spend(catalog, rows),
        remote=await store.remote_cost_rows(ids),
    )


def _route_spend(catalog: Catalog, rows: Sequence[CostRow]) -> list[RouteSpend]:
    """The cost rows summed per route, with each route's batch discount."""
    sums: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for row in rows:
        total = sums[row.route]
        total[0] += row.attempts
        if row.charge_status is ChargeStatus.CHARGED:
            total[1] += row.cost_usd
        elif row.charge_status is ChargeStatus.UNKNOWN:
            total[2] += row.cost_usd
    found = []
    for name in sorted(sums):
        attempts, charged, unknown = sums[name]
        route = catalog.routes.get(name)
        found.append(
            RouteSpend(
                route=name,
                attempts=int(attempts),
                charged_usd=round(charged, 6),
                unknown_usd=round(unknown, 6),
                batch_discount=route.batch_discount if route else 1.0,
            )
        )
    return found


def _failure_charges(
    catalog: Catalog, rows: Sequence[CostRow], observed: Sequence[ChargeObservation]
) -> list[FailureCharge]:
    latest = {(o.route, o.outcome.value): o for o in observed}
    counts: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        if row.outcome != Outcome.OK.value:
            counts[row.route, row.outcome][row.charge_status.value] += row.attempts
    keys = sorted(set(counts) | {k for k in latest if k[1] != Outcome.OK.value})
    found = []
    for route_name, outcome in keys:
        route = catalog.routes.get(route_name)
        found.append(
            FailureCharge(
                route=route_name,
                outcome=outcome,
                expected=route.charge_policy(Outcome(outcome)) if route else None,
                observed=latest.get((route_name, outcome)),
                attempts=dict(counts.get((route_name, outcome), {})),
            )
        )
    return found


async def reprice_attempts(
    store: Costs, catalog: Catalog, book: PriceBook, batch_ids: Sequence[str] | None
) -> RepriceSummary:
    """Recompute every attempt's ``expected_usd`` from its stored usage and job fields.

    Charge statuses are kept (they may rest on a probe or the call log); only the expected
    amounts move. Attempts whose route or prices are gone are left alone and listed.
    """
    inputs = await store.repricing_inputs(batch_ids)
    before = after = 0.0
    changes: list[tuple[str, float]] = []
    skipped: dict[str, None] = {}
    for item in inputs:
        old = item.expected_usd or 0.0
        before += old
        route = catalog.routes.get(item.route)
        if route is None:
            skipped[f"route {item.route!r} is no longer defined"] = None
            after += old
            continue
        try:
            cost = reprice(
                book,
                route,
                job=item.job,
                usage=item.usage,
                outcome=item.outcome,
                images=item.images_returned,
                charge_status=item.charge_status,
            )
        except ConfigError as exc:
            skipped[str(exc)] = None
            after += old
            continue
        after += cost.expected_usd
        if item.expected_usd is None or abs(cost.expected_usd - old) > 1e-9:
            changes.append((item.attempt_id, cost.expected_usd))
    await store.set_expected(changes)
    return RepriceSummary(
        before_usd=round(before, 6),
        after_usd=round(after, 6),
        attempts=len(inputs),
        changed=len(changes),
        skipped=list(skipped),
    )
