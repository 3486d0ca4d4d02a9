"""Read-side queries: batch status and spend. Aggregates run in the database."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio
from sqlalchemy import (
    ColumnElement,
    ScalarSelect,
    Select,
    Table,
    TextClause,
    case,
    func,
    null,
    select,
    text,
)

from runner.models import AttemptState, ChargeStatus, JobState
from runner.store.database import Database
from runner.store.records import BatchInfo, BatchStatus
from runner.store.tables import MISMATCHED, NOT_OK, SCORED, attempts, batches, jobs, outputs

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


T = TypeVar("T")


class _Later(Generic[T]):
    """Where a task of a task group leaves its result."""

    value: T

    async def fill(self, work: Callable[[list[str], bool], Awaitable[T]], *args: Any) -> None:
        self.value = await work(*args)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Money:
    """One batch's attempts: how many, and what they cost."""

    attempts: int = 0
    spent_usd: float = 0.0
    unknown_usd: float = 0.0


#: Jobs by batch and state; failed and unknown jobs by batch and last outcome.
_JobCounts = tuple[defaultdict[str, dict[JobState, int]], defaultdict[str, dict[str, int]]]
#: Outputs by batch; of them, not what their job asked for; edits flagged.
_OutputCounts = tuple[dict[str, int], dict[str, int], dict[str, int]]
#: Attempts' money by batch.
_Spend = defaultdict[str, _Money]
#: Attempts that did not succeed, by batch and outcome (``sending`` while in flight).
_Failures = defaultdict[str, dict[str, int]]
#: Both of the above.
_Attempts = tuple[_Spend, _Failures]
#: The flags of edits whose output ignored the source or sent it back unchanged.
_FLAGGED = ("ignored_source", "unchanged")


class ReportOps:
    """Status and spend queries. Mixed into :class:`runner.store.Store`."""

    db: Database

    async def batch_status(self, batch_list: Sequence[BatchInfo]) -> list[BatchStatus]:
        """Counts by state, outputs, attempts, spend and failure classes for each batch."""
        ids = [b.id for b in batch_list]
        # SQLite counts a whole table without stepping through its rows (see _rows_of);
        # PostgreSQL scans it.
        whole = self.db.dialect == "sqlite"
        states, made, money = _Later[_JobCounts](), _Later[_OutputCounts](), _Later[_Attempts]()
        # Three independent index reads, each on its own connection, side by side: with a
        # million attempts the spend sums are most of the time, and the others hide behind them.
        async with anyio.create_task_group() as tg:
            tg.start_soon(states.fill, self._job_counts, ids, whole)
            tg.start_soon(made.fill, self._output_counts, ids, whole)
            tg.start_soon(money.fill, self._money, ids, whole)
        counts, failures = states.value
        n_outputs, mismatched, flagged = made.value
        spend, attempt_failures = money.value
        return [
            BatchStatus(
                batch=b,
                counts=counts[b.id],
                outputs=n_outputs.get(b.id, 0),
                mismatched=mismatched.get(b.id, 0),
                flagged_edits=flagged.get(b.id, 0),
                attempts=spend[b.id].attempts,
                spent_usd=spend[b.id].spent_usd,
                unknown_charges_usd=spend[b.id].unknown_usd,
                failures=failures[b.id],
                attempt_failures=attempt_failures[b.id],
            )
            for b in batch_list
        ]

    async def _job_counts(self, ids: list[str], whole: bool) -> _JobCounts:
        """Jobs by batch and state; failed and unknown jobs by batch and last outcome.

        With ``whole``, a batch of most of the jobs (see :func:`_rows_of`) has its succeeded
        jobs counted as all its jobs less those in the other states (which a finished batch
        has few of), and all its jobs as the whole table's less the other batches'.
        """
        counts: defaultdict[str, dict[JobState, int]] = defaultdict(dict)
        failures: defaultdict[str, dict[str, int]] = defaultdict(dict)
        of_batch = jobs.c.batch_id == batches.c.id
        by_state: list[ColumnElement[Any]] = [
            _count(jobs, of_batch, jobs.c.state == state.value) for state in JobState
        ]
        if whole:
            # The succeeded column is null where the batch's total (the last column) says.
            done = list(JobState).index(JobState.SUCCEEDED)
            by_state[done] = case((_most_jobs(), null()), else_=by_state[done])
            by_state.append(case((_most_jobs(), _rows_of(jobs)), else_=null()))
        async with self.db.reading() as conn:
            for bid, *numbers in await conn.execute(_for_each(ids, by_state)):
                if whole:
                    total = numbers.pop()
                    if total is not None:
                        numbers[done] = total - sum(n for n in numbers if n is not None)
                counts[bid] = {s: n for s, n in zip(JobState, numbers, strict=True) if n}
            for bid, outcome, n in await conn.execute(
                select(jobs.c.batch_id, jobs.c.last_outcome, func.count())
                .where(
                    jobs.c.batch_id.in_(ids),
                    jobs.c.state.in_([JobState.FAILED.value, JobState.UNKNOWN.value]),
                )
                .group_by(jobs.c.batch_id, jobs.c.last_outcome)
            ):
                failures[bid][outcome or "unknown"] = n
        return counts, failures

    async def _output_counts(self, ids: list[str], whole: bool) -> _OutputCounts:
        """Outputs by batch, how many are not what their job asked for, how many edits flagged.

        Three counts, each off its own index: the batch index for all outputs, the partial
        indexes (which hold only those rows) for the mismatched ones and the scored edits.
        """
        of_batch = outputs.c.batch_id == batches.c.id
        counted: list[ColumnElement[Any]] = [
            _counted(outputs, of_batch, whole),
            _count(outputs, of_batch, text(MISMATCHED)),
            _count(outputs, of_batch, text(SCORED), outputs.c.edit_flag.in_(_FLAGGED)),
        ]
        n_outputs, mismatched, flagged = {}, {}, {}
        async with self.db.reading() as conn:
            for bid, n, odd, marked in await conn.execute(_for_each(ids, counted)):
                n_outputs[bid], mismatched[bid], flagged[bid] = n, odd, marked
        return n_outputs, mismatched, flagged

    async def _money(self, ids: list[str], whole: bool) -> _Attempts:
        """Attempts, spend and possible spend by batch; attempts not ``ok`` by batch and outcome.

        The count and sums read ``ix_attempts_batch_spend`` alone (it holds every column they
        use), each sum only its charge status's part of the batch; the attempts that are not
        ``ok`` come from their partial index, and so cost nothing in a batch where all went well.
        With ``whole``, a batch of most of the jobs is counted by :func:`_rows_of`.
        """
        of_batch = attempts.c.batch_id == batches.c.id
        charged = attempts.c.charge_status == ChargeStatus.CHARGED.value
        unknown = attempts.c.charge_status == ChargeStatus.UNKNOWN.value
        done = attempts.c.state == AttemptState.DONE.value
        read: list[ColumnElement[Any]] = [
            _counted(attempts, of_batch, whole),
            select(func.sum(_COST)).where(of_batch, charged).scalar_subquery(),
            select(func.sum(_MAYBE)).where(of_batch, unknown, done).scalar_subquery(),
        ]
        totals: defaultdict[str, _Money] = defaultdict(_Money)
        found: _Failures = defaultdict(dict)
        async with self.db.reading() as conn:
            for bid, n, spent, unsure in await conn.execute(_for_each(ids, read)):
                totals[bid] = _Money(
                    attempts=n, spent_usd=float(spent or 0), unknown_usd=float(unsure or 0)
                )
            for bid, outcome, n in await conn.execute(
                select(attempts.c.batch_id, attempts.c.outcome, func.count())
                .where(attempts.c.batch_id.in_(ids), text(NOT_OK))
                .group_by(attempts.c.batch_id, attempts.c.outcome)
            ):
                found[bid][outcome or "sending"] = n
        return totals, found

    async def exposure_usd(self, batch_ids: Sequence[str]) -> float:
        """Spend that counts against a budget: charged or possibly charged, plus in flight.

        Attempts whose charge is unknown count at their expected cost (their worst case when
        none was worked out, as for ``lost`` ones), and attempts still ``sending`` at their
        worst case: a budget is a promise not to exceed, so we assume the worst until the
        provider's records say otherwise.
        """
        async with self.db.reading() as conn:
            value = await conn.scalar(
                select(func.sum(exposure())).where(attempts.c.batch_id.in_(list(batch_ids)))
            )
        return float(value or 0.0)


def _count(table: Table, *where: ColumnElement[bool] | TextClause) -> ScalarSelect[int]:
    """``count(*)`` of ``table``'s rows matching ``where``, as a scalar subquery."""
    return select(func.count()).select_from(table).where(*where).scalar_subquery()


def _most_jobs() -> ColumnElement[bool]:
    """The batch holds more than half of all jobs (the rest summed once per statement)."""
    everyone = select(func.sum(batches.c.job_count)).scalar_subquery()
    return batches.c.job_count * 2 > everyone


def _rows_of(table: Table) -> ColumnElement[int]:
    """How many rows of ``table`` the batch has: the table's rows less those of the batches
    before and after it in ``batch_id`` order.

    SQLite counts a whole table (``count(*)`` with nothing to match) from its b-tree pages'
    cell counts, without stepping through the rows: 2 M instructions for a million against
    420 M for one batch's million in an index (callgrind). The ranges before and after are
    the other batches' rows, so this pays off only for a batch of most of them.
    """
    everything = select(func.count()).select_from(table).scalar_subquery()
    before = _count(table, table.c.batch_id < batches.c.id)
    after = _count(table, table.c.batch_id > batches.c.id)
    return everything - before - after


def _counted(table: Table, of_batch: ColumnElement[bool], whole: bool) -> ColumnElement[int]:
    """The batch's rows of ``table``; with ``whole``, by :func:`_rows_of` for a batch of most
    of the jobs."""
    if not whole:
        return _count(table, of_batch)
    return case((_most_jobs(), _rows_of(table)), else_=_count(table, of_batch))


def _for_each(ids: list[str], columns: Sequence[ColumnElement[Any]]) -> Select[Any]:
    """One row per batch in ``ids``: its id, then ``columns`` (subqueries of that batch).

    Each subquery counts or sums one range of an index, the batch's (and a state's or
    charge status's in it): no row is compared with the one before it, as a ``GROUP BY``
    compares every row's key (on a million rows, a third of the time).
    """
    return select(batches.c.id, *columns).where(batches.c.id.in_(ids))
