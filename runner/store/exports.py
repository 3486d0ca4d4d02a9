"""Read queries for export: a batch's outputs and its failed jobs, streamed in pages.

Both iterators walk the batch's jobs in id order with keyset pagination (``id > last``), so
memory stays bounded by one page however large the batch, and each page is read on its own
short read-only connection: no transaction is held open while the caller writes files.
Walking every job (not only the wanted ones) is what gives each row its 1-based ``index``,
the job's position in the batch.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from runner.models import JobState
from runner.store.engine import reading
from runner.store.tables import attempts, jobs, outputs

#: Jobs per page. A page holds at most this many jobs' outputs (``n`` of each).
PAGE_SIZE = 1000
#: Job states exported as failures.
FAILED_STATES = (JobState.FAILED.value, JobState.UNKNOWN.value)

_JOB_COLUMNS = (
    jobs.c.id.label("job_id"),
    jobs.c.ext_id,
    jobs.c.state,
    jobs.c.prompt,
    jobs.c.params,
    jobs.c.meta,
    jobs.c.attempts.label("attempt_count"),
    jobs.c.last_outcome,
    jobs.c.last_error,
)
_OUTPUT_COLUMNS = (
    outputs.c.k,
    outputs.c.path,
    outputs.c.sha256,
    outputs.c.width,
    outputs.c.height,
    outputs.c.format,
    outputs.c.bytes,
    outputs.c.created_at,
)
_ATTEMPT_COLUMNS = (
    attempts.c.id.label("request_id"),
    attempts.c.provider_request_id,
    attempts.c.gateway_request_id,
    attempts.c.route,
    attempts.c.provider,
    attempts.c.model,
    attempts.c.expected_usd,
    attempts.c.observed_usd,
    attempts.c.charge_status,
)


#: A result row of any width (SQLAlchemy types rows by their column tuple).
_Row = Row[*tuple[Any, ...]]


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportJob:
    """A job as exported, with the attempt that speaks for it and the job's cost totals.

    For an output that attempt is the one that produced it; for a failed job, its last one
    (absent when the job failed before any request left).
    """

    job_id: int
    ext_id: str
    #: 1-based position of the job in its batch, by job id.
    index: int
    state: str
    prompt: str
    params: dict[str, Any]
    metadata: dict[str, Any]
    attempts: int
    last_outcome: str | None
    last_error: str | None
    request_id: str | None
    provider_request_id: str | None
    gateway_request_id: str | None
    route: str | None
    provider: str | None
    model: str | None
    expected_usd: float | None
    observed_usd: float | None
    charge_status: str | None
    #: Sums over every attempt of the job (retries included); ``None`` when none is known.
    job_expected_usd: float | None
    job_observed_usd: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportOutput(ExportJob):
    """One output image of a succeeded job."""

    k: int
    #: How many outputs the job has (names get a ``-k`` suffix when more than one).
    outputs_in_job: int
    #: Relative to the data directory.
    path: str
    sha256: str
    width: int
    height: int
    format: str
    bytes: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class _JobRef:
    id: int
    state: str
    index: int


class ExportOps:
    """Streaming export reads. Mixed into :class:`runner.store.Store`."""

    engine: AsyncEngine

    async def count_export(self, batch_id: str, *, include_failed: bool = False) -> int:
        """How many rows :meth:`iter_outputs` (plus :meth:`iter_failed`) will yield."""
        async with reading(self.engine) as conn:
            total = await conn.scalar(
                select(func.count()).select_from(outputs).where(outputs.c.batch_id == batch_id)
            )
            if include_failed:
                total = (total or 0) + (
                    await conn.scalar(
                        select(func.count())
                        .select_from(jobs)
                        .where(jobs.c.batch_id == batch_id, jobs.c.state.in_(FAILED_STATES))
                    )
                    or 0
                )
        return int(total or 0)

    async def iter_outputs(
        self, batch_id: str, *, page_size: int = PAGE_SIZE
    ) -> AsyncGenerator[list[ExportOutput], None]:
        """The batch's outputs in job-id then ``k`` order, one page of jobs at a time."""
        async for refs in self._job_pages(batch_id, page_size):
            async with reading(self.engine) as conn:
                page = await _outputs_page(conn, batch_id, refs)
            if page:
                yield page

    async def iter_failed(
        self, batch_id: str, *, page_size: int = PAGE_SIZE
    ) -> AsyncGenerator[list[ExportJob], None]:
        """The batch's ``failed`` and ``unknown`` jobs in id order, with their last attempt."""
        async for refs in self._job_pages(batch_id, page_size):
            wanted = [r for r in refs if r.state in FAILED_STATES]
            if not wanted:
                continue
            async with reading(self.engine) as conn:
                page = await _failed_page(conn, wanted)
            yield page

    async def _job_pages(self, batch_id: str, page_size: int) -> AsyncIterator[list[_JobRef]]:
        after, index = -1, 0
        while True:
            async with reading(self.engine) as conn:
                rows = (
                    await conn.execute(
                        select(jobs.c.id, jobs.c.state)
                        .where(jobs.c.batch_id == batch_id, jobs.c.id > after)
                        .order_by(jobs.c.id)
                        .limit(page_size)
                    )
                ).all()
            if not rows:
                return
            refs = [_JobRef(r.id, r.state, index + i + 1) for i, r in enumerate(rows)]
            index += len(rows)
            after = rows[-1].id
            yield refs


async def _outputs_page(
    conn: AsyncConnection, batch_id: str, refs: Sequence[_JobRef]
) -> list[ExportOutput]:
    first, last = refs[0].id, refs[-1].id
    rows = (
        await conn.execute(
            select(*_OUTPUT_COLUMNS, *_JOB_COLUMNS, *_ATTEMPT_COLUMNS)
            .join(jobs, jobs.c.id == outputs.c.job_id)
            .join(attempts, attempts.c.id == outputs.c.attempt_id, isouter=True)
            # A range on job_id walks the (job_id, k) unique index; no IN list of a page of ids.
            .where(
                outputs.c.batch_id == batch_id,
                outputs.c.job_id >= first,
                outputs.c.job_id <= last,
            )
            .order_by(outputs.c.job_id, outputs.c.k)
        )
    ).all()
    if not rows:
        return []
    totals = await _job_totals(conn, first, last)
    index = {r.id: r.index for r in refs}
    per_job: dict[int, int] = {}
    for row in rows:
        per_job[row.job_id] = per_job.get(row.job_id, 0) + 1
    return [
        ExportOutput(
            **_job_fields(row, index[row.job_id], totals.get(row.job_id)),
            k=row.k,
            outputs_in_job=per_job[row.job_id],
            path=row.path,
            sha256=row.sha256,
            width=row.width,
            height=row.height,
            format=row.format,
            bytes=row.bytes,
            created_at=row.created_at,
        )
        for row in rows
    ]


async def _failed_page(conn: AsyncConnection, refs: Sequence[_JobRef]) -> list[ExportJob]:
    ids = [r.id for r in refs]
    job_rows = {
        r.job_id: r for r in await conn.execute(select(*_JOB_COLUMNS).where(jobs.c.id.in_(ids)))
    }
    last_attempt: dict[int, _Row] = {}
    for row in await conn.execute(
        select(attempts.c.job_id, *_ATTEMPT_COLUMNS)
        .where(attempts.c.job_id.in_(ids))
        .order_by(attempts.c.job_id, attempts.c.number)
    ):
        last_attempt[row.job_id] = row
    totals = await _job_totals(conn, ids[0], ids[-1])
    page = []
    for ref in refs:
        job = job_rows[ref.id]
        fields = _job_fields(job, ref.index, totals.get(ref.id))
        attempt = last_attempt.get(ref.id)
        fields.update(_attempt_fields(attempt))
        page.append(ExportJob(**fields))
    return page


async def _job_totals(
    conn: AsyncConnection, first: int, last: int
) -> dict[int, tuple[float | None, float | None]]:
    rows = await conn.execute(
        select(
            attempts.c.job_id, func.sum(attempts.c.expected_usd), func.sum(attempts.c.observed_usd)
        )
        .where(attempts.c.job_id >= first, attempts.c.job_id <= last)
        .group_by(attempts.c.job_id)
    )
    return {job_id: (expected, observed) for job_id, expected, observed in rows}


def _job_fields(
    row: _Row, index: int, totals: tuple[float | None, float | None] | None
) -> dict[str, Any]:
    expected, observed = totals or (None, None)
    fields: dict[str, Any] = {
        "job_id": row.job_id,
        "ext_id": row.ext_id,
        "index": index,
        "state": row.state,
        "prompt": row.prompt,
        "params": row.params or {},
        "metadata": row.meta or {},
        "attempts": row.attempt_count,
        "last_outcome": row.last_outcome,
        "last_error": row.last_error,
        "job_expected_usd": expected,
        "job_observed_usd": observed,
    }
    fields.update(_attempt_fields(row if "request_id" in row._fields else None))
    return fields


def _attempt_fields(row: _Row | None) -> dict[str, Any]:
    names = [c.name for c in _ATTEMPT_COLUMNS]
    if row is None:
        return dict.fromkeys(names)
    return {name: getattr(row, name) for name in names}
