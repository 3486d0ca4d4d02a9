"""Shared batch budgets: every worker spends only what the database granted it.

A batch's budget is one promise, however many ``imagerun run`` processes work on the batch.
Each process keeps its own :class:`runner.budget.Budget` for the batch, whose limit is the sum
of its grants, and asks for more only when an attempt would not fit. A grant comes out of what
is left: the budget, less everything spent or possibly spent on the batch (attempts in flight
at their worst case), less the unspent part of every live worker's grants. Each worker stays
within its grants, so together they stay within the budget.

A worker that stopped, or whose heartbeat is older than ``live_within_s``, holds nothing: what
it spent stays counted, its unspent grant goes back.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from runner.models import utcnow
from runner.store.engine import run_write
from runner.store.reports import exposure
from runner.store.tables import attempts, batches, budget_grants, workers


class BudgetOps:
    """Budget grants. Mixed into :class:`runner.store.Store`."""

    engine: AsyncEngine
    dialect: str

    async def grant_budget(
        self, batch_id: str, worker_id: str, want_usd: float, *, live_within_s: float
    ) -> float:
        """Grant ``worker_id`` up to ``want_usd`` more of ``batch_id``'s budget.

        Returns what was granted: less than asked (down to 0) when the budget is nearly gone,
        and ``want_usd`` for a batch without a budget.
        """
        return await run_write(
            self.engine,
            _grant,
            batch_id,
            worker_id,
            want_usd,
            live_within_s,
            self.dialect == "postgresql",
        )


def _grant(
    conn: Connection,
    batch_id: str,
    worker_id: str,
    want_usd: float,
    live_within_s: float,
    lock_rows: bool,
) -> float:
    query = select(batches.c.budget_usd).where(batches.c.id == batch_id)
    if lock_rows:
        query = query.with_for_update()  # one grant at a time per batch, across processes
    budget = conn.scalar(query)
    if budget is None:
        return want_usd
    spent_by = {
        row.worker_id: float(row.spent or 0.0)
        for row in conn.execute(
            select(attempts.c.worker_id, func.sum(exposure()).label("spent"))
            .where(attempts.c.batch_id == batch_id)
            .group_by(attempts.c.worker_id)
        )
    }
    now = utcnow()
    live = (workers.c.stopped_at.is_(None)) & (
        workers.c.heartbeat_at >= now - timedelta(seconds=live_within_s)
    )
    others = conn.execute(
        select(budget_grants.c.worker_id, budget_grants.c.granted_usd)
        .join(workers, workers.c.id == budget_grants.c.worker_id)
        .where(budget_grants.c.batch_id == batch_id, budget_grants.c.worker_id != worker_id, live)
    )
    mine = (budget_grants.c.batch_id == batch_id) & (budget_grants.c.worker_id == worker_id)
    granted = conn.scalar(select(budget_grants.c.granted_usd).where(mine))
    unspent = sum(max(0.0, float(r.granted_usd) - spent_by.get(r.worker_id, 0.0)) for r in others)
    unspent += max(0.0, float(granted or 0.0) - spent_by.get(worker_id, 0.0))
    left = float(budget) - sum(spent_by.values()) - unspent
    grant = max(0.0, min(want_usd, left))
    if grant <= 0.0:
        return 0.0
    if granted is not None:
        conn.execute(
            update(budget_grants)
            .where(mine)
            .values(granted_usd=budget_grants.c.granted_usd + grant, updated_at=now)
        )
    else:
        conn.execute(
            insert(budget_grants).values(
                batch_id=batch_id, worker_id=worker_id, granted_usd=grant, updated_at=now
            )
        )
    return grant
