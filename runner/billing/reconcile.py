"""``imagerun reconcile``: settle attempts' charges from the provider's call log and balance.

Matching runs over every attempt on the routes that share the account (same key variable,
same call log), so a row belonging to a sibling route is not mistaken for a stranger's; only
attempts in the asked-for scope (route, optionally one batch) are updated.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio

from runner.abc import Charges
from runner.billing.endpoints import (
    AccountEndpoints,
    BillingUnavailable,
    CallLog,
    account_client,
    load_call_log,
    read_balance,
    read_call_log,
)
from runner.billing.matching import Matching, Verdict, match_log
from runner.models import ChargeEvidence, ChargeStatus, Outcome
from runner.routes import Catalog, Route
from runner.store import BatchInfo
from runner.store.charges import (
    BalanceSnapshot,
    BilledAttempt,
    ChargeObservation,
    ChargeUpdate,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class BalanceCheck:
    """The account's balance delta over a window against the ledger's spend in it."""

    since: datetime
    until: datetime
    delta_usd: float
    ledger_usd: float
    unknown_usd: float

    @property
    def gap_usd(self) -> float:
        return round(self.delta_usd - self.ledger_usd, 6)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconcileReport:
    route: str
    batch: BatchInfo | None
    source: str
    log_rows: int
    attempts: int
    #: Verdicts applied, by ``how`` (request_id, client_request_id, time, absent).
    matched: dict[str, int]
    changed: int
    charged: int
    charged_usd: float
    not_charged: int
    unknown: int
    unknown_possible_usd: float
    unmatched_rows: int
    unmatched_usd: float
    ledger_usd: float
    balance: BalanceCheck | None = None
    observations: list[ChargeObservation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        balance = self.balance
        return {
            "route": self.route,
            "batch": self.batch.name if self.batch else None,
            "source": self.source,
            "log_rows": self.log_rows,
            "attempts": self.attempts,
            "matched": self.matched,
            "changed": self.changed,
            "charged": {"attempts": self.charged, "usd": self.charged_usd},
            "not_charged": self.not_charged,
            "unknown": {"attempts": self.unknown, "possible_usd": self.unknown_possible_usd},
            "unmatched_rows": {"rows": self.unmatched_rows, "usd": self.unmatched_usd},
            "ledger_usd": self.ledger_usd,
            "balance": None
            if balance is None
            else {
                "since": balance.since.isoformat(),
                "until": balance.until.isoformat(),
                "delta_usd": balance.delta_usd,
                "ledger_usd": balance.ledger_usd,
                "unknown_usd": balance.unknown_usd,
                "gap_usd": balance.gap_usd,
            },
            "observations": {o.outcome.value: o.charge_status.value for o in self.observations},
            "notes": self.notes,
        }


def account_routes(catalog: Catalog, route: Route, endpoints: AccountEndpoints) -> list[str]:
    """Routes billed to the same account as ``route`` (same key variable and call log)."""
    return sorted(
        r.name
        for r in catalog.routes.values()
        if r.api_key_env == route.api_key_env
        and AccountEndpoints.for_route(r).log_url == AccountEndpoints.for_route(route).log_url
    ) or [route.name]


async def reconcile(
    store: Charges,
    catalog: Catalog,
    route_name: str,
    *,
    environ: Mapping[str, str],
    endpoints: AccountEndpoints | None = None,
    log_file: Path | None = None,
    batch: BatchInfo | None = None,
    settle: float | None = None,
) -> ReconcileReport:
    """Match attempts on ``route_name`` (in ``batch``) with the call log; record the verdicts.

    Args:
        endpoints: where the balance and call log are (default: derived from the route).
        log_file: an exported call log to use instead of the API.
        settle: seconds after an attempt ends before a missing row counts as "not charged"
            (a charge for a timed-out request lands when the upstream finishes; default the
            route's timeout).
    """
    route = catalog.get(route_name)
    endpoints = endpoints or AccountEndpoints.for_route(route)
    notes: list[str] = []
    log = await _call_log(store, route, endpoints, environ, log_file, notes)
    siblings = account_routes(catalog, route, endpoints)
    everyone = await store.billed_attempts(routes=siblings)
    matching = match_log(everyone, log, settle=route.timeout if settle is None else settle)
    in_scope = [
        a for a in everyone if a.route == route.name and (batch is None or a.batch_id == batch.id)
    ]
    scope_ids = {a.id for a in in_scope}
    verdicts = [v for v in matching.verdicts if v.attempt.id in scope_ids]
    updates = [_update(v) for v in verdicts if _changes(v)]
    await store.record_charges(updates)
    observations = _observations(route.name, verdicts, log.source)
    await store.record_observations(observations)
    now_scope = await store.billed_attempts(ids=sorted(scope_ids)) if scope_ids else []
    balance = await _balance_check(store, route, endpoints, siblings, in_scope)
    return _report(
        route, batch, log, matching, verdicts, updates, now_scope, balance, observations, notes
    )


async def _call_log(
    store: Charges,
    route: Route,
    endpoints: AccountEndpoints,
    environ: Mapping[str, str],
    log_file: Path | None,
    notes: list[str],
) -> CallLog:
    if log_file is not None:
        return await anyio.to_thread.run_sync(load_call_log, log_file, endpoints)
    async with account_client(route, environ) as client:
        log = await read_call_log(client, endpoints)
        try:
            balance = await read_balance(client, endpoints)
        except BillingUnavailable as exc:
            notes.append(f"balance not read: {exc}")
        else:
            await store.record_balance(
                BalanceSnapshot(
                    route=route.name,
                    account=endpoints.account(route),
                    used_usd=balance.used_usd,
                    remaining_usd=balance.remaining_usd,
                    source="reconcile",
                    taken_at=balance.read_at,
                )
            )
    return log


def _changes(verdict: Verdict) -> bool:
    """Whether the verdict says something new (a probe's matching verdict is kept as is)."""
    a = verdict.attempt
    return (
        a.charge_status is not verdict.status
        or a.observed_usd != verdict.usd
        or a.charge_evidence is ChargeEvidence.POLICY
    )


def _update(verdict: Verdict) -> ChargeUpdate:
    return ChargeUpdate(
        attempt_id=verdict.attempt.id,
        charge_status=verdict.status,
        evidence=ChargeEvidence.CALL_LOG,
        observed_usd=verdict.usd,
    )


def _observations(route: str, verdicts: list[Verdict], source: str) -> list[ChargeObservation]:
    """Per failure class: charged, not charged, or ``unknown`` when the log shows both."""
    seen: dict[Outcome, Counter[ChargeStatus]] = defaultdict(Counter)
    amounts: dict[Outcome, float] = defaultdict(float)
    for v in verdicts:
        if v.attempt.outcome in (Outcome.OK, Outcome.LOST, Outcome.INTERRUPTED):
            continue
        seen[v.attempt.outcome][v.status] += 1
        amounts[v.attempt.outcome] += v.usd or 0.0
    found = []
    for outcome, counts in sorted(seen.items()):
        status = next(iter(counts)) if len(counts) == 1 else ChargeStatus.UNKNOWN
        found.append(
            ChargeObservation(
                route=route,
                outcome=outcome,
                charge_status=status,
                evidence=ChargeEvidence.CALL_LOG,
                observed_usd=round(amounts[outcome], 6),
                detail={"source": source, "attempts": {s.value: n for s, n in counts.items()}},
            )
        )
    return found


async def _balance_check(
    store: Charges,
    route: Route,
    endpoints: AccountEndpoints,
    siblings: list[str],
    in_scope: list[BilledAttempt],
) -> BalanceCheck | None:
    """Balance delta between the last reading before the scope began and the first after."""
    if not in_scope:
        return None
    start = min(a.started_at for a in in_scope)
    end = max(a.finished_at or a.started_at for a in in_scope)
    snapshots = await store.balance_snapshots(endpoints.account(route))
    before = [s for s in snapshots if s.taken_at <= start]
    after = [s for s in snapshots if s.taken_at >= end]
    if not before or not after:
        return None
    first, last = before[-1], after[0]
    window = [
        a
        for a in await store.billed_attempts(routes=siblings)
        if first.taken_at <= a.started_at <= last.taken_at
    ]
    return BalanceCheck(
        since=first.taken_at,
        until=last.taken_at,
        delta_usd=round(last.used_usd - first.used_usd, 6),
        ledger_usd=round(sum(a.cost_usd for a in window), 6),
        unknown_usd=round(
            sum(
                a.expected_usd or a.worst_case_usd
                for a in window
                if a.charge_status is ChargeStatus.UNKNOWN
            ),
            6,
        ),
    )


def _report(
    route: Route,
    batch: BatchInfo | None,
    log: CallLog,
    matching: Matching,
    verdicts: list[Verdict],
    updates: list[ChargeUpdate],
    now_scope: list[BilledAttempt],
    balance: BalanceCheck | None,
    observations: list[ChargeObservation],
    notes: list[str],
) -> ReconcileReport:
    charged = [a for a in now_scope if a.charge_status is ChargeStatus.CHARGED]
    unknown = [a for a in now_scope if a.charge_status is ChargeStatus.UNKNOWN]
    if balance is None:
        notes.append(
            "no balance readings before and after these attempts: balance delta not compared "
            "(probe-billing and reconcile take readings)"
        )
    return ReconcileReport(
        route=route.name,
        batch=batch,
        source=log.source,
        log_rows=len(log.rows),
        attempts=len(now_scope),
        matched=dict(Counter(v.how for v in verdicts)),
        changed=len(updates),
        charged=len(charged),
        charged_usd=round(sum(a.cost_usd for a in charged), 6),
        not_charged=sum(a.charge_status is ChargeStatus.NOT_CHARGED for a in now_scope),
        unknown=len(unknown),
        unknown_possible_usd=round(sum(a.expected_usd or a.worst_case_usd for a in unknown), 6),
        unmatched_rows=len(matching.unmatched_rows),
        unmatched_usd=round(sum(r.usd for r in matching.unmatched_rows), 6),
        ledger_usd=round(sum(a.cost_usd for a in now_scope), 6),
        balance=balance,
        observations=observations,
        notes=notes,
    )
