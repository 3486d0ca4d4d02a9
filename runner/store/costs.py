"""Spend reports: what finished attempts cost, grouped for ``imagerun spend``.

By route, outcome, charge status and evidence (``cost_rows``); by remote batch
(``remote_cost_rows``); and the images kept though not what their jobs asked for
(``mismatch_rows``). Each counts an attempt at what it cost if charged, at what it may have
cost if unknown, and at nothing if not charged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, case, func, select

from runner.models import ChargeEvidence, ChargeStatus, Outcome
from runner.store.charges import finished_in
from runner.store.database import Database
from runner.store.outage import retried
from runner.store.tables import attempts, outputs, remote_batches


@dataclass(frozen=True, slots=True, kw_only=True)
class CostRow:
    """Attempts of one (route, outcome, charge status, evidence) group and their money."""

    route: str
    outcome: str
    charge_status: ChargeStatus
    evidence: ChargeEvidence
    attempts: int
    expected_usd: float
    observed_usd: float
    #: Attempts of the group with an observed amount.
    observed: int
    #: Charged: what they cost. Unknown: what they may have cost. Not charged: 0.
    cost_usd: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteCostRow:
    """One remote batch's lines as the ledger holds them: how many, what came back, the cost.

    Attributes:
        id: ours (``rb…``).
        remote_id: the provider's batch id, once created.
        status: the provider's status as last polled.
        lines: line attempts finished in the ledger; ``ok`` of them produced images.
        expected_usd: their expected cost at the route's (batch) price; not charged lines 0.
        cost_usd: charged, plus what unknown lines may have cost.
    """

    id: str
    route: str
    remote_id: str | None
    status: str | None
    lines: int
    ok: int
    expected_usd: float
    cost_usd: float


@dataclass(frozen=True, slots=True, kw_only=True)
class MismatchRow:
    """One route's images kept (and paid for) though not what their jobs asked for."""

    route: str
    images: int
    #: The attempts that delivered them, and what those attempts cost (or may have).
    attempts: int
    cost_usd: float


#: What an attempt cost (charged) or may have cost (unknown; a ``lost`` one its worst case).
_MAYBE = func.coalesce(attempts.c.observed_usd, attempts.c.expected_usd, attempts.c.worst_case_usd)


#: What an attempt counts for in spend: charged, what it may have cost if unknown, else 0.
_COST = case(
    (attempts.c.charge_status == ChargeStatus.NOT_CHARGED.value, 0.0),
    (attempts.c.charge_status == ChargeStatus.UNKNOWN.value, _MAYBE),
    else_=func.coalesce(attempts.c.observed_usd, attempts.c.expected_usd, 0.0),
)


class CostOps:
    """The spend reports of :class:`runner.abc.Costs`. Mixed into :class:`runner.store.Store`."""

    db: Database

    @retried
    async def cost_rows(self, batch_ids: Sequence[str] | None = None) -> list[CostRow]:
        status = attempts.c.charge_status
        keys = (attempts.c.route, attempts.c.outcome, status, attempts.c.charge_evidence)
        query = (
            select(
                *keys,
                func.count(),
                func.sum(func.coalesce(attempts.c.expected_usd, 0.0)),
                func.sum(func.coalesce(attempts.c.observed_usd, 0.0)),
                func.count(attempts.c.observed_usd),
                func.sum(_COST),
            )
            .where(and_(*finished_in(None, batch_ids)))
            .group_by(*keys)
            .order_by(*keys)
        )
        async with self.db.reading() as conn:
            return [
                CostRow(
                    route=route,
                    outcome=outcome or Outcome.LOST.value,
                    charge_status=ChargeStatus(charge),
                    evidence=ChargeEvidence(evidence),
                    attempts=n,
                    expected_usd=round(float(expected or 0), 6),
                    observed_usd=round(float(observed or 0), 6),
                    observed=n_observed,
                    cost_usd=round(float(spent or 0), 6),
                )
                for route, outcome, charge, evidence, n, expected, observed, n_observed, spent in (
                    await conn.execute(query)
                )
            ]

    @retried
    async def remote_cost_rows(self, batch_ids: Sequence[str] | None = None) -> list[RemoteCostRow]:
        query = (
            select(
                remote_batches.c.id,
                remote_batches.c.route,
                remote_batches.c.remote_id,
                remote_batches.c.status,
                func.count(),
                func.count().filter(attempts.c.outcome == Outcome.OK.value),
                func.sum(func.coalesce(attempts.c.expected_usd, 0.0)),
                func.sum(_COST),
            )
            .join(remote_batches, remote_batches.c.id == attempts.c.remote_batch_id)
            .where(and_(*finished_in(None, batch_ids)))
            .group_by(
                remote_batches.c.id,
                remote_batches.c.route,
                remote_batches.c.remote_id,
                remote_batches.c.status,
                remote_batches.c.created_at,
            )
            .order_by(remote_batches.c.created_at, remote_batches.c.id)
        )
        async with self.db.reading() as conn:
            return [
                RemoteCostRow(
                    id=rb_id,
                    route=route,
                    remote_id=remote_id,
                    status=status,
                    lines=n,
                    ok=n_ok,
                    expected_usd=round(float(expected or 0), 6),
                    cost_usd=round(float(spent or 0), 6),
                )
                for rb_id, route, remote_id, status, n, n_ok, expected, spent in (
                    await conn.execute(query)
                )
            ]

    @retried
    async def mismatch_rows(self, batch_ids: Sequence[str] | None = None) -> list[MismatchRow]:
        wrong = (
            select(outputs.c.attempt_id, func.count().label("images"))
            .where(outputs.c.asked.is_not(None))
            .group_by(outputs.c.attempt_id)
            .subquery()
        )
        query = (
            select(
                attempts.c.route,
                func.sum(wrong.c.images),
                func.count(),
                func.sum(func.coalesce(attempts.c.observed_usd, attempts.c.expected_usd, 0.0)),
            )
            .join(wrong, wrong.c.attempt_id == attempts.c.id)
            .where(and_(*finished_in(None, batch_ids)))
            .group_by(attempts.c.route)
            .order_by(attempts.c.route)
        )
        async with self.db.reading() as conn:
            return [
                MismatchRow(
                    route=route, images=int(images), attempts=n, cost_usd=round(float(usd), 6)
                )
                for route, images, n, usd in await conn.execute(query)
            ]
