"""Repricing verbs: what the price engine reads of each finished attempt, and the new expected
cost it arrives at with a newer price book (``imagerun costs --reprice``).

Charge statuses are not touched here: they may rest on a probe or the provider's call log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, select, update

from runner.models import AttemptState, ChargeStatus, Outcome
from runner.pricing import PricedJob
from runner.store.database import Database
from runner.store.outage import retried
from runner.store.tables import attempts, jobs


@dataclass(frozen=True, slots=True, kw_only=True)
class RepriceInput:
    """What :func:`runner.pricing.reprice` needs for one stored attempt."""

    attempt_id: str
    route: str
    outcome: Outcome
    usage: dict[str, Any] | None
    images_returned: int
    charge_status: ChargeStatus
    expected_usd: float | None
    #: What the price engine reads of the attempt's job.
    job: PricedJob


class RepricingOps:
    """The repricing verbs of :class:`runner.abc.Costs`. Mixed into :class:`runner.store.Store`."""

    db: Database

    @retried
    async def repricing_inputs(self, batch_ids: Sequence[str] | None = None) -> list[RepriceInput]:
        where: list[ColumnElement[bool]] = [attempts.c.state == AttemptState.DONE.value]
        if batch_ids is not None:
            where.append(attempts.c.batch_id.in_(list(batch_ids)))
        query = (
            select(
                attempts.c.id,
                attempts.c.route,
                attempts.c.outcome,
                attempts.c.usage,
                attempts.c.images_returned,
                attempts.c.charge_status,
                attempts.c.expected_usd,
                jobs.c.prompt,
                jobs.c.params,
                jobs.c.images,
                jobs.c.mask,
            )
            .join(jobs, jobs.c.id == attempts.c.job_id)
            .where(and_(*where))
            .order_by(attempts.c.started_at)
        )
        async with self.db.reading() as conn:
            return [
                RepriceInput(
                    attempt_id=r.id,
                    route=r.route,
                    outcome=Outcome(r.outcome or Outcome.LOST.value),
                    usage=r.usage,
                    images_returned=r.images_returned or 0,
                    charge_status=ChargeStatus(r.charge_status),
                    expected_usd=r.expected_usd,
                    job=PricedJob.from_fields(
                        prompt=r.prompt,
                        params=r.params,
                        images=len(r.images or ()),
                        mask=bool(r.mask),
                    ),
                )
                for r in await conn.execute(query)
            ]

    @retried
    async def set_expected(self, prices: Sequence[tuple[str, float]]) -> int:
        if not prices:
            return 0
        statement = (
            update(attempts)
            .where(attempts.c.id == bindparam("b_id"))
            .values(expected_usd=bindparam("b_usd"))
        )
        async with self.db.writing() as conn:
            await conn.execute(statement, [{"b_id": i, "b_usd": usd} for i, usd in prices])
        return len(prices)
