"""Shared batch budgets: every worker spends only what the database granted it.

A batch's budget is one promise, however many ``imagerun run`` processes work on the batch.
Each process keeps its own :class:`runner.run.spending.BatchShare` of the batch, the sum of its
grants, and asks for more only when an attempt would not fit. A grant comes out of what
is left: the budget, less everything spent or possibly spent on the batch (attempts in flight
at their worst case), less the unspent part of every live grant. Each worker stays within its
grants, so together they stay within the budget.

A grant lives for ``hold_s`` seconds from its holder's last renewal (its heartbeat renews it,
with its own lease as the measure, so workers with different leases judge each other fairly).
A grant that lapsed, or whose holder stopped, holds nothing more: what was spent stays counted,
the rest goes back. A holder that finds its grant lapsed on renewal keeps only what it spent
(see :meth:`BudgetOps.renew_budget_grants`).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Connection, func, insert, select, update

from runner.models import utcnow
from runner.store.database import Database
from runner.store.outage import retried
from runner.store.reports import exposure
from runner.store.tables import attempts, batches, budget_grants, workers


class BudgetOps:
    """The :class:`runner.abc.BudgetGrants` verbs. Mixed into :class:`runner.store.Store`."""

    db: Database

    @retried
    async def grant_budget(
        self,
        batch_id: str,
        worker_id: str,
        want_usd: float,
        *,
        at_least: float = 0.0,
        hold_s: float,
    ) -> float:
        return await self.db.run_write(
            _grant,
            batch_id,
            worker_id,
            want_usd,
            at_least,
            hold_s,
            self.db.dialect == "postgresql",
        )

    @retried
    async def renew_budget_grants(self, worker_id: str, hold_s: float) -> list[str]:
        return await self.db.run_write(_renew, worker_id, hold_s)


def _spent_by(conn: Connection, batch_id: str) -> dict[str | None, float]:
    return {
        row.worker_id: float(row.spent or 0.0)
        for row in conn.execute(
            select(attempts.c.worker_id, func.sum(exposure()).label("spent"))
            .where(attempts.c.batch_id == batch_id)
            .group_by(attempts.c.worker_id)
        )
    }


def _grant(
    conn: Connection,
    batch_id: str,
    worker_id: str,
    want_usd: float,
    at_least: float,
    hold_s: float,
    lock_rows: bool,
) -> float:
    query = select(batches.c.budget_usd).where(batches.c.id == batch_id)
    if lock_rows:
        query = query.with_for_update()  # one grant at a time per batch, across processes
    budget = conn.scalar(query)
    if budget is None:
        return want_usd
    spent_by = _spent_by(conn, batch_id)
    now = utcnow()
    others = conn.execute(
        select(budget_grants.c.worker_id, budget_grants.c.granted_usd)
        .join(workers, workers.c.id == budget_grants.c.worker_id)
        .where(
            budget_grants.c.batch_id == batch_id,
            budget_grants.c.worker_id != worker_id,
            budget_grants.c.expires_at >= now,
            workers.c.stopped_at.is_(None),
        )
    )
    mine = (budget_grants.c.batch_id == batch_id) & (budget_grants.c.worker_id == worker_id)
    granted = conn.scalar(select(budget_grants.c.granted_usd).where(mine))
    unspent = sum(max(0.0, float(r.granted_usd) - spent_by.get(r.worker_id, 0.0)) for r in others)
    unspent += max(0.0, float(granted or 0.0) - spent_by.get(worker_id, 0.0))
    left = float(budget) - sum(spent_by.values()) - unspent
    if left < max(at_least, 1e-12):
        return 0.0
    grant = min(want_usd, left)
    expires = now + timedelta(seconds=hold_s)
    if granted is not None:
        conn.execute(
            update(budget_grants)
            .where(mine)
            .values(
                granted_usd=budget_grants.c.granted_usd + grant, expires_at=expires, updated_at=now
            )
        )
    else:
        conn.execute(
            insert(budget_grants).values(
                batch_id=batch_id,
                worker_id=worker_id,
                granted_usd=grant,
                expires_at=expires,
                updated_at=now,
            )
        )
    return grant


def _renew(conn: Connection, worker_id: str, hold_s: float) -> list[str]:
    now = utcnow()
    rows = conn.execute(
        select(budget_grants.c.batch_id, budget_grants.c.expires_at).where(
            budget_grants.c.worker_id == worker_id
        )
    ).all()
    lapsed = [r.batch_id for r in rows if r.expires_at < now]
    for batch_id in lapsed:
        spent = _spent_by(conn, batch_id).get(worker_id, 0.0)
        conn.execute(
            update(budget_grants)
            .where(budget_grants.c.batch_id == batch_id, budget_grants.c.worker_id == worker_id)
            .values(granted_usd=spent, updated_at=now)
        )
    if rows:
        conn.execute(
            update(budget_grants)
            .where(budget_grants.c.worker_id == worker_id)
            .values(expires_at=now + timedelta(seconds=hold_s))
        )
    return lapsed
