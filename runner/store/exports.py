"""Read queries for export: a batch's outputs and its failed jobs, streamed in pages.

Both iterators walk the batch's jobs in id order with keyset pagination (``id > last``), so
memory stays bounded by one page however large the batch, and each page is read on its own
short read-only connection: no transaction is held open while the caller writes files.
Walking every job (not only the wanted ones) is what gives each row its 1-based ``index``,
the job's position in the batch.

Each page's read is shielded from cancellation: a query cancelled half-way leaves the
driver's connection closing in a task nobody awaits (aiosqlite then hangs the event loop's
shutdown). A page takes milliseconds, so a cancelled export stops at the next page boundary.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio
from sqlalchemy import and_, bindparam, func, select, update
from sqlalchemy.engine import Row

from runner.models import JobState, SourceImage
from runner.store.database import Database
from runner.store.outage import retried
from runner.store.tables import attempts, jobs, outputs, remote_batches

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

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
    jobs.c.images,
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
    outputs.c.asked,
    outputs.c.got,
    outputs.c.edit_fidelity,
    outputs.c.edit_flag,
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
    attempts.c.latency_ms,
    remote_batches.c.remote_id.label("remote_batch_id"),
)

_OUTPUT_NAMES = tuple(c.name for c in _OUTPUT_COLUMNS)
_JOB_NAMES = tuple(c.name for c in _JOB_COLUMNS)
_ATTEMPT_NAMES = tuple(c.name for c in _ATTEMPT_COLUMNS)

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
    #: The job's source images (an edit has at least one).
    images: tuple[SourceImage, ...] = ()
    #: How long the speaking attempt took, in milliseconds.
    latency_ms: float | None = None
    #: The provider's id of the remote batch (Batch API) the speaking attempt was a line of.
    remote_batch_id: str | None = None


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
    #: What the job asked for and what came, where they differ; ``None`` when they agree.
    asked: str | None = None
    got: str | None = None
    #: An edit's score against its first source and its flag (stored once an export scored it).
    edit_fidelity: float | None = None
    edit_flag: str | None = None


@dataclass(frozen=True, slots=True)
class _JobRef:
    id: int
    state: str
    index: int


class ExportOps:
    """The :class:`runner.abc.Exports` verbs. Mixed into :class:`runner.store.Store`."""

    db: Database

    @retried
    async def count_export(self, batch_id: str, *, include_failed: bool = False) -> int:
        failed: int | None = 0
        with anyio.CancelScope(shield=True):
            async with self.db.reading() as conn:
                produced = await conn.scalar(
                    select(func.count()).select_from(outputs).where(outputs.c.batch_id == batch_id)
                )
                if include_failed:
                    failed = await conn.scalar(
                        select(func.count())
                        .select_from(jobs)
                        .where(jobs.c.batch_id == batch_id, jobs.c.state.in_(FAILED_STATES))
                    )
        return (produced or 0) + (failed or 0)

    @retried
    async def record_fidelity(self, scored: Sequence[ExportOutput]) -> None:
        """Keep the ``edit_fidelity`` and ``edit_flag`` of scored edit outputs."""
        rows = [
            {"j": r.job_id, "kk": r.k, "score": r.edit_fidelity, "flag": r.edit_flag}
            for r in scored
            if r.edit_flag is not None
        ]
        if not rows:
            return
        statement = (
            update(outputs)
            .where(and_(outputs.c.job_id == bindparam("j"), outputs.c.k == bindparam("kk")))
            .values(edit_fidelity=bindparam("score"), edit_flag=bindparam("flag"))
        )
        with anyio.CancelScope(shield=True):
            async with self.db.writing() as conn:
                await conn.execute(statement, rows)

    async def iter_outputs(
        self, batch_id: str, *, page_size: int = PAGE_SIZE
    ) -> AsyncGenerator[list[ExportOutput], None]:
        async for refs in self._job_pages(batch_id, page_size):
            with anyio.CancelScope(shield=True):
                async with self.db.reading() as conn:
                    page = await _outputs_page(conn, refs)
            if page:
                yield page

    async def iter_failed(
        self, batch_id: str, *, page_size: int = PAGE_SIZE
    ) -> AsyncGenerator[list[ExportJob], None]:
        async for refs in self._job_pages(batch_id, page_size):
            wanted = [r for r in refs if r.state in FAILED_STATES]
            if not wanted:
                continue
            with anyio.CancelScope(shield=True):
                async with self.db.reading() as conn:
                    page = await _failed_page(conn, wanted)
            yield page

    async def _job_pages(self, batch_id: str, page_size: int) -> AsyncIterator[list[_JobRef]]:
        # Walk the primary key between the batch's first and last job, skipping rows of other
        # batches that fall in between. Filtering on batch_id in SQL instead would let the
        # planner pick the (batch_id, state) index and sort the whole batch for every page:
        # quadratic in the batch size.
        with anyio.CancelScope(shield=True):
            async with self.db.reading() as conn:
                first, last = (
                    await conn.execute(
                        select(func.min(jobs.c.id), func.max(jobs.c.id)).where(
                            jobs.c.batch_id == batch_id
                        )
                    )
                ).one()
        if first is None:
            return
        after, index = first - 1, 0
        while after < last:
            with anyio.CancelScope(shield=True):
                async with self.db.reading() as conn:
                    rows = (
                        await conn.execute(
                            select(jobs.c.id, jobs.c.state, jobs.c.batch_id)
                            .where(jobs.c.id > after, jobs.c.id <= last)
                            .order_by(jobs.c.id)
                            .limit(page_size)
                        )
                    ).all()
            if not rows:
                return
            after = rows[-1].id
            refs = []
            for row in rows:
                if row.batch_id == batch_id:
                    index += 1
                    refs.append(_JobRef(row.id, row.state, index))
            if refs:
                yield refs


async def _outputs_page(conn: AsyncConnection, refs: Sequence[_JobRef]) -> list[ExportOutput]:
    ids = [r.id for r in refs]
    rows = (
        await conn.execute(
            select(*_OUTPUT_COLUMNS, *_JOB_COLUMNS, *_ATTEMPT_COLUMNS)
            .join(jobs, jobs.c.id == outputs.c.job_id)
            .join(attempts, attempts.c.id == outputs.c.attempt_id, isouter=True)
            .join(remote_batches, remote_batches.c.id == attempts.c.remote_batch_id, isouter=True)
            # By job id: the (job_id, k) unique index, whatever the size of the batch.
            .where(outputs.c.job_id.in_(ids))
            .order_by(outputs.c.job_id, outputs.c.k)
        )
    ).all()
    if not rows:
        return []
    totals = await _job_totals(conn, ids)
    index = {r.id: r.index for r in refs}
    per_job: dict[int, int] = {}
    for row in rows:
        per_job[row.job_id] = per_job.get(row.job_id, 0) + 1
    # Plain tuples zipped with known names: building 100,000 records is then cheap.
    split = len(_OUTPUT_NAMES) + len(_JOB_NAMES)
    page = []
    for row in rows:
        values = tuple(row)
        fields = dict(zip(_OUTPUT_NAMES, values[: len(_OUTPUT_NAMES)], strict=True))
        fields.update(zip(_ATTEMPT_NAMES, values[split:], strict=True))
        fields.update(_job_fields(row, index[row.job_id], totals.get(row.job_id)))
        page.append(ExportOutput(**fields, outputs_in_job=per_job[row.job_id]))
    return page


async def _failed_page(conn: AsyncConnection, refs: Sequence[_JobRef]) -> list[ExportJob]:
    ids = [r.id for r in refs]
    job_rows = {
        r.job_id: r for r in await conn.execute(select(*_JOB_COLUMNS).where(jobs.c.id.in_(ids)))
    }
    last_attempt: dict[int, _Row] = {}
    for row in await conn.execute(
        select(attempts.c.job_id, *_ATTEMPT_COLUMNS)
        .select_from(attempts)
        .join(remote_batches, remote_batches.c.id == attempts.c.remote_batch_id, isouter=True)
        .where(attempts.c.job_id.in_(ids))
        .order_by(attempts.c.job_id, attempts.c.number)
    ):
        last_attempt[row.job_id] = row
    totals = await _job_totals(conn, ids)
    page = []
    for ref in refs:
        fields = _job_fields(job_rows[ref.id], ref.index, totals.get(ref.id))
        fields.update(_attempt_fields(last_attempt.get(ref.id)))
        page.append(ExportJob(**fields))
    return page


async def _job_totals(
    conn: AsyncConnection, ids: list[int]
) -> dict[int, tuple[float | None, float | None]]:
    rows = await conn.execute(
        select(
            attempts.c.job_id, func.sum(attempts.c.expected_usd), func.sum(attempts.c.observed_usd)
        )
        .where(attempts.c.job_id.in_(ids))
        .group_by(attempts.c.job_id)
    )
    return {job_id: (expected, observed) for job_id, expected, observed in rows}


def _job_fields(
    row: _Row, index: int, totals: tuple[float | None, float | None] | None
) -> dict[str, Any]:
    expected, observed = totals or (None, None)
    return {
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
        "images": tuple(SourceImage.from_json(i) for i in row.images or ()),
    }


def _attempt_fields(row: _Row | None) -> dict[str, Any]:
    if row is None:
        return dict.fromkeys(_ATTEMPT_NAMES)
    return dict(zip(_ATTEMPT_NAMES, tuple(row)[-len(_ATTEMPT_NAMES) :], strict=True))
