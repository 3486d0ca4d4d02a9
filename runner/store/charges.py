"""Charge verbs: what attempts were really charged, observed policies, balance readings.

The ledger (``ledger.py``) writes each attempt's *expected* charge from the route's policy.
These verbs let the provider's own records correct it afterwards (``observed_usd``,
``charge_status``, ``charge_evidence``), keep the failure-charge behaviour observed per route
(``charge_observations``) and keep balance readings (``balance_snapshots``) for comparing an
account's balance delta with the ledger. The spend reports are in ``costs.py``, repricing
in ``repricing.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, insert, select, update

from runner.models import AttemptState, ChargeEvidence, ChargeStatus, Outcome, utcnow
from runner.store.database import Database
from runner.store.outage import retried
from runner.store.tables import (
    attempts,
    balance_snapshots,
    charge_observations,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class BilledAttempt:
    """A finished attempt as billing sees it: its ids, window, and cost fields."""

    id: str
    batch_id: str
    route: str
    model: str
    outcome: Outcome
    http_status: int | None
    error_message: str | None
    provider_request_id: str | None
    gateway_request_id: str | None
    started_at: datetime
    finished_at: datetime | None
    worst_case_usd: float
    expected_usd: float | None
    charge_status: ChargeStatus
    charge_evidence: ChargeEvidence
    observed_usd: float | None

    @property
    def cost_usd(self) -> float:
        """What it cost as far as we know (0 unless charged)."""
        if self.charge_status is not ChargeStatus.CHARGED:
            return 0.0
        return self.observed_usd if self.observed_usd is not None else self.expected_usd or 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargeUpdate:
    """The provider's word on one attempt."""

    attempt_id: str
    charge_status: ChargeStatus
    evidence: ChargeEvidence
    observed_usd: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargeObservation:
    """Whether one failure class was charged on a route, and how we know."""

    route: str
    outcome: Outcome
    charge_status: ChargeStatus
    evidence: ChargeEvidence
    observed_usd: float | None = None
    attempt_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    observed_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True, kw_only=True)
class BalanceSnapshot:
    """One reading of an account's balance, in USD."""

    route: str
    account: str
    used_usd: float
    remaining_usd: float | None
    source: str
    detail: dict[str, Any] = field(default_factory=dict)
    taken_at: datetime = field(default_factory=utcnow)


def finished_in(
    routes: Sequence[str] | None, batch_ids: Sequence[str] | None
) -> list[ColumnElement[bool]]:
    """The conditions on finished attempts (of ``routes``, of ``batch_ids``, if given)."""
    where: list[ColumnElement[bool]] = [attempts.c.state == AttemptState.DONE.value]
    if routes is not None:
        where.append(attempts.c.route.in_(list(routes)))
    if batch_ids is not None:
        where.append(attempts.c.batch_id.in_(list(batch_ids)))
    return where


class ChargeOps:
    """The :class:`runner.abc.Charges` and :class:`~runner.abc.ChargePolicy` verbs, and the
    observations of :class:`~runner.abc.Costs`. Mixed into :class:`runner.store.Store`.
    """

    db: Database

    @retried
    async def billed_attempts(
        self,
        *,
        routes: Sequence[str] | None = None,
        batch_ids: Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[BilledAttempt]:
        where = finished_in(routes, batch_ids)
        if ids is not None:
            where.append(attempts.c.id.in_(list(ids)))
        async with self.db.reading() as conn:
            rows = await conn.execute(
                select(attempts).where(and_(*where)).order_by(attempts.c.started_at)
            )
            return [
                BilledAttempt(
                    id=r.id,
                    batch_id=r.batch_id,
                    route=r.route,
                    model=r.model,
                    outcome=Outcome(r.outcome or Outcome.LOST.value),
                    http_status=r.http_status,
                    error_message=r.error_message,
                    provider_request_id=r.provider_request_id,
                    gateway_request_id=r.gateway_request_id,
                    started_at=r.started_at,
                    finished_at=r.finished_at,
                    worst_case_usd=r.worst_case_usd,
                    expected_usd=r.expected_usd,
                    charge_status=ChargeStatus(r.charge_status),
                    charge_evidence=ChargeEvidence(r.charge_evidence),
                    observed_usd=r.observed_usd,
                )
                for r in rows
            ]

    @retried
    async def record_charges(self, updates: Sequence[ChargeUpdate]) -> int:
        if not updates:
            return 0
        statement = (
            update(attempts)
            .where(attempts.c.id == bindparam("b_id"))
            .values(
                charge_status=bindparam("b_status"),
                charge_evidence=bindparam("b_evidence"),
                observed_usd=bindparam("b_observed"),
            )
        )
        params = [
            {
                "b_id": u.attempt_id,
                "b_status": u.charge_status.value,
                "b_evidence": u.evidence.value,
                "b_observed": u.observed_usd,
            }
            for u in updates
        ]
        async with self.db.writing() as conn:
            await conn.execute(statement, params)
        return len(updates)

    @retried
    async def record_observations(self, observations: Sequence[ChargeObservation]) -> None:
        if not observations:
            return
        rows = []
        for obs in observations:
            row = asdict(obs)
            row.update(
                outcome=obs.outcome.value,
                charge_status=obs.charge_status.value,
                evidence=obs.evidence.value,
            )
            rows.append(row)
        async with self.db.writing() as conn:
            await conn.execute(insert(charge_observations), rows)

    @retried
    async def observations(self, routes: Sequence[str] | None = None) -> list[ChargeObservation]:
        query = select(charge_observations).order_by(
            charge_observations.c.observed_at, charge_observations.c.id
        )
        if routes is not None:
            query = query.where(charge_observations.c.route.in_(list(routes)))
        async with self.db.reading() as conn:
            return [
                ChargeObservation(
                    route=r.route,
                    outcome=Outcome(r.outcome),
                    charge_status=ChargeStatus(r.charge_status),
                    evidence=ChargeEvidence(r.evidence),
                    observed_usd=r.observed_usd,
                    attempt_id=r.attempt_id,
                    detail=dict(r.detail),
                    observed_at=r.observed_at,
                )
                for r in await conn.execute(query)
            ]

    async def observed_policy(self, route: str) -> dict[Outcome, ChargeObservation]:
        return {obs.outcome: obs for obs in await self.observations([route])}

    @retried
    async def record_balance(self, snapshot: BalanceSnapshot) -> None:
        async with self.db.writing() as conn:
            await conn.execute(insert(balance_snapshots).values(**asdict(snapshot)))

    @retried
    async def balance_snapshots(self, account: str) -> list[BalanceSnapshot]:
        query = (
            select(balance_snapshots)
            .where(balance_snapshots.c.account == account)
            .order_by(balance_snapshots.c.taken_at, balance_snapshots.c.id)
        )
        async with self.db.reading() as conn:
            return [
                BalanceSnapshot(
                    route=r.route,
                    account=r.account,
                    used_usd=r.used_usd,
                    remaining_usd=r.remaining_usd,
                    source=r.source,
                    detail=dict(r.detail),
                    taken_at=r.taken_at,
                )
                for r in await conn.execute(query)
            ]
