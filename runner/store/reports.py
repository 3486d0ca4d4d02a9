"""Read-side queries: batch status and spend. Aggregates run in the database."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from runner.models import AttemptState, ChargeStatus, JobState, Outcome
from runner.store.engine import reading
from runner.store.records import BatchInfo, BatchStatus
from runner.store.tables import attempts, jobs, outputs

#: What an attempt cost us as far as we know: the provider's word if we have it.
_COST = func.coalesce(attempts.c.observed_usd, attempts.c.expected_usd, 0.0)
#: What an attempt of unknown charge may have cost. A ``lost`` attempt (closed by recovery) has
#: no expected cost; it may have been charged in full, so it keeps its worst case.
_MAYBE = func.coalesce(attempts.c.observed_usd, attempts.c.expected_usd, attempts.c.worst_case_usd)


def exposure() -> ColumnElement[float]:
    """What one attempt counts against a budget (see :meth:`ReportOps.exposure_usd`)."""
    return case(
        (attempts.c.state == AttemptState.SENDING.value, attempts.c.worst_case_usd),
        (attempts.c.charge_status == ChargeStatus.NOT_CHARGED.value, 0.0),
        (attempts.c.charge_status == ChargeStatus.UNKNOWN.value, _MAYBE),
        else_=_COST,
    )


class ReportOps:
    """Status and spend queries. Mixed into :class:`runner.store.Store`."""

    engine: AsyncEngine

    async def batch_status(self, batch_list: Sequence[BatchInfo]) -> list[BatchStatus]:
        """Counts by state, outputs, attempts, spend and failure classes for each batch."""
        ids = [b.id for b in batch_list]
        counts: dict[str, dict[JobState, int]] = defaultdict(dict)
        failures: dict[str, dict[str, int]] = defaultdict(dict)
        attempt_failures: dict[str, dict[str, int]] = defaultdict(dict)
        async with reading(self.engine) as conn:
            for bid, state, n in await conn.execute(
                select(jobs.c.batch_id, jobs.c.state, func.count())
                .where(jobs.c.batch_id.in_(ids))
                .group_by(jobs.c.batch_id, jobs.c.state)
            ):
                counts[bid][JobState(state)] = n
            for bid, outcome, n in await conn.execute(
                select(jobs.c.batch_id, jobs.c.last_outcome, func.count())
                .where(
                    jobs.c.batch_id.in_(ids),
                    jobs.c.state.in_([JobState.FAILED.value, JobState.UNKNOWN.value]),
                )
                .group_by(jobs.c.batch_id, jobs.c.last_outcome)
            ):
                failures[bid][outcome or "unknown"] = n
            rows = await conn.execute(
                select(outputs.c.batch_id, func.count())
                .where(outputs.c.batch_id.in_(ids))
                .group_by(outputs.c.batch_id)
            )
            n_outputs: dict[str, int] = dict(rows.all())
        money = await self._money(ids, attempt_failures)
        return [
            BatchStatus(
                batch=b,
                counts=counts[b.id],
                outputs=n_outputs.get(b.id, 0),
                attempts=money[b.id][0],
                spent_usd=money[b.id][1],
                unknown_charges_usd=money[b.id][2],
                failures=failures[b.id],
                attempt_failures=attempt_failures[b.id],
            )
            for b in batch_list
        ]

    async def _money(
        self, ids: list[str], attempt_failures: dict[str, dict[str, int]]
    ) -> dict[str, tuple[int, float, float]]:
        charged = case((attempts.c.charge_status == ChargeStatus.CHARGED.value, _COST), else_=0.0)
        unknown = case(
            (
                (attempts.c.charge_status == ChargeStatus.UNKNOWN.value)
                & (attempts.c.state == AttemptState.DONE.value),
                _MAYBE,
            ),
            else_=0.0,
        )
        totals: dict[str, tuple[int, float, float]] = defaultdict(lambda: (0, 0.0, 0.0))
        async with reading(self.engine) as conn:
            for bid, outcome, n, spent, unsure in await conn.execute(
                select(
                    attempts.c.batch_id,
                    attempts.c.outcome,
                    func.count(),
                    func.sum(charged),
                    func.sum(unknown),
                )
                .where(attempts.c.batch_id.in_(ids))
                .group_by(attempts.c.batch_id, attempts.c.outcome)
            ):
                n0, s0, u0 = totals[bid]
                totals[bid] = (n0 + n, s0 + float(spent or 0), u0 + float(unsure or 0))
                if outcome != Outcome.OK.value:
                    attempt_failures[bid][outcome or "sending"] = n
        return totals

    async def exposure_usd(self, batch_ids: Sequence[str]) -> float:
        """Spend that counts against a budget: charged or possibly charged, plus in flight.

        Attempts whose charge is unknown count at their expected cost (their worst case when
        none was worked out, as for ``lost`` ones), and attempts still ``sending`` at their
        worst case: a budget is a promise not to exceed, so we assume the worst until the
        provider's records say otherwise.
        """
        async with reading(self.engine) as conn:
            value = await conn.scalar(
                select(func.sum(exposure())).where(attempts.c.batch_id.in_(list(batch_ids)))
            )
        return float(value or 0.0)
