"""Remote batch verbs: the lines of a provider's batch, from their ledger rows to settled.

A remote batch's jobs are leased to ``remote:<its id>`` with no expiry while it lives: no
worker holds them, so a worker that dies does not make them ``unknown`` (recovery only takes
back leases that run out), and the next run's driver resumes the remote batch from its
recorded step instead. Its lines' attempts stay ``sending`` until their result is applied.

The remote batch itself is leased to the worker driving it (``worker_id`` until
``lease_expires``, from that driver's own lease, renewed as it drives). Every change a driver
records is conditional on its still being the owner, so a driver that was taken over (it
stalled past its lease) records nothing more and stops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.engine import Row

from runner.models import AttemptState, JobState, RemoteStep, utcnow
from runner.store.database import Database
from runner.store.leases import _job
from runner.store.ledger import apply_starts
from runner.store.outage import retried
from runner.store.records import AttemptStart, RemoteBatch, RemoteLine
from runner.store.tables import attempts, batches, jobs, remote_batches, workers

#: The lease owner of a job whose line is in a remote batch: ``remote:<remote batch id>``.
REMOTE_OWNER = "remote:"
#: The steps after which nothing more is done about a remote batch.
ENDED_STEPS = [step.value for step in RemoteStep if step.ended]


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteChange:
    """What changed about a remote batch (``None``: unchanged)."""

    step: RemoteStep | None = None
    remote_id: str | None = None
    status: str | None = None
    request_counts: dict[str, int] | None = None
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    source_file_ids: dict[str, str] | None = None
    bytes: int | None = None
    error: str | None = None
    collect_failures: int | None = None
    submitted_at: datetime | None = None
    finished_at: datetime | None = None

    def values(self) -> dict[str, Any]:
        found = {f.name: getattr(self, f.name) for f in fields(self)}
        values = {k: v for k, v in found.items() if v is not None}
        if self.step is not None:
            values["step"] = self.step.value
        return values


class RemoteOps:
    """The :class:`runner.abc.RemoteBatches` verbs. Mixed into :class:`runner.store.Store`."""

    db: Database

    @retried
    async def open_remote_batch(
        self, batch: RemoteBatch, starts: Sequence[AttemptStart]
    ) -> list[str]:
        async with self.db.writing() as conn:
            written: list[AttemptStart] = []
            # In chunks: each statement binds one variable per job, and SQLite allows 32,766.
            for chunk in _chunked(starts):
                verdicts = await conn.run_sync(apply_starts, chunk)
                written += [s for s, lost in zip(chunk, verdicts, strict=True) if lost is None]
            if not written:
                return []
            now = utcnow()
            row = _row(batch)
            row.update(line_count=len(written), created_at=now, updated_at=now)
            await conn.execute(insert(remote_batches).values(**row))
            for chunk in _chunked(written):
                await conn.execute(
                    update(attempts)
                    .where(attempts.c.id.in_([s.id for s in chunk]))
                    .values(remote_batch_id=batch.id)
                )
                await conn.execute(
                    update(jobs)
                    .where(jobs.c.id.in_([s.job_id for s in chunk]))
                    .values(lease_owner=REMOTE_OWNER + batch.id, lease_expires=None, updated_at=now)
                )
        return [s.id for s in written]

    @retried
    async def remote_batches(
        self, batch_ids: Sequence[str], *, unfinished_only: bool = False
    ) -> list[RemoteBatch]:
        query = select(remote_batches).where(remote_batches.c.batch_id.in_(list(batch_ids)))
        if unfinished_only:
            query = query.where(remote_batches.c.step.not_in(ENDED_STEPS))
        async with self.db.reading() as conn:
            rows = await conn.execute(query.order_by(remote_batches.c.created_at))
            return [_remote(r) for r in rows]

    @retried
    async def take_remote_batch(
        self, rb_id: str, worker_id: str, *, lease_seconds: float
    ) -> RemoteBatch | None:
        now = utcnow()
        # Judged by its driver's own lease, never the taker's: a driver with a longer lease,
        # or just slow polls, keeps it. Its lease passed, or its driver stopped (or died on
        # its host, which marks it stopped): then it is free.
        stopped = select(workers.c.id).where(workers.c.stopped_at.is_not(None))
        # A remote batch opened before its row had a lease (an upgraded database) is judged
        # by its driver's heartbeat against the taker's lease.
        live = select(workers.c.id).where(
            workers.c.stopped_at.is_(None),
            workers.c.heartbeat_at >= now - timedelta(seconds=lease_seconds),
        )
        free = or_(
            remote_batches.c.worker_id.is_(None),
            remote_batches.c.worker_id == worker_id,
            and_(
                remote_batches.c.lease_expires.is_(None),
                remote_batches.c.worker_id.not_in(live),
            ),
            remote_batches.c.lease_expires < now,
            remote_batches.c.worker_id.in_(stopped),
        )
        async with self.db.writing() as conn:
            moved = await conn.execute(
                update(remote_batches)
                .where(
                    remote_batches.c.id == rb_id, remote_batches.c.step.not_in(ENDED_STEPS), free
                )
                .values(
                    worker_id=worker_id,
                    lease_expires=now + timedelta(seconds=lease_seconds),
                    updated_at=now,
                )
            )
            if moved.rowcount != 1:
                return None
            row = (
                await conn.execute(select(remote_batches).where(remote_batches.c.id == rb_id))
            ).one()
        return _remote(row)

    @retried
    async def advance_remote_batch(
        self, rb_id: str, change: RemoteChange, *, owner: str, lease_seconds: float
    ) -> bool:
        now = utcnow()
        async with self.db.writing() as conn:
            moved = await conn.execute(
                update(remote_batches)
                .where(remote_batches.c.id == rb_id, remote_batches.c.worker_id == owner)
                .values(
                    **change.values(),
                    lease_expires=now + timedelta(seconds=lease_seconds),
                    updated_at=now,
                )
            )
        return int(moved.rowcount) == 1

    @retried
    async def remote_lines(
        self, rb_id: str, attempt_ids: Sequence[str] | None = None
    ) -> list[RemoteLine]:
        query = (
            select(
                jobs,
                batches.c.route,
                attempts.c.id.label("a_id"),
                attempts.c.worker_id.label("a_worker"),
                attempts.c.provider.label("a_provider"),
                attempts.c.shape.label("a_shape"),
                attempts.c.endpoint.label("a_endpoint"),
                attempts.c.model.label("a_model"),
                attempts.c.billing_unit.label("a_billing"),
                attempts.c.params.label("a_params"),
                attempts.c.worst_case_usd.label("a_worst"),
                attempts.c.started_at.label("a_started"),
            )
            .select_from(attempts)
            .join(jobs, jobs.c.id == attempts.c.job_id)
            .join(batches, batches.c.id == jobs.c.batch_id)
            .where(
                attempts.c.remote_batch_id == rb_id,
                attempts.c.state == AttemptState.SENDING.value,
            )
        )
        if attempt_ids is not None:
            query = query.where(attempts.c.id.in_(list(attempt_ids)))
        async with self.db.reading() as conn:
            rows = await conn.execute(query.order_by(attempts.c.id))
            return [RemoteLine(start=_start(r), job=_job(r)) for r in rows]

    @retried
    async def request_remote_cancel(self, batch_id: str) -> list[RemoteBatch]:
        async with self.db.writing() as conn:
            await conn.execute(
                update(remote_batches)
                .where(
                    remote_batches.c.batch_id == batch_id,
                    remote_batches.c.step.not_in(ENDED_STEPS),
                )
                .values(cancel_requested=1, updated_at=utcnow())
            )
            rows = await conn.execute(
                select(remote_batches).where(
                    remote_batches.c.batch_id == batch_id,
                    remote_batches.c.step.not_in(ENDED_STEPS),
                )
            )
            return [_remote(r) for r in rows]

    @retried
    async def remote_job_count(self, batch_ids: Sequence[str]) -> int:
        """How many jobs of these batches are lines of a remote batch that is not applied."""
        async with self.db.reading() as conn:
            found = await conn.scalar(
                select(func.count()).where(
                    jobs.c.batch_id.in_(list(batch_ids)),
                    jobs.c.state == JobState.RUNNING.value,
                    jobs.c.lease_owner.like(REMOTE_OWNER + "%"),
                )
            )
            return int(found or 0)


def _chunked(starts: Sequence[AttemptStart], size: int = 5000) -> list[list[AttemptStart]]:
    return [list(starts[i : i + size]) for i in range(0, len(starts), size)]


def _row(batch: RemoteBatch) -> dict[str, Any]:
    return {
        "id": batch.id,
        "batch_id": batch.batch_id,
        "route": batch.route,
        "endpoint": batch.endpoint,
        "model": batch.model,
        "step": batch.step.value,
        "source_file_ids": dict(batch.source_file_ids),
        "bytes": batch.bytes,
        "worker_id": batch.worker_id,
        "lease_expires": batch.lease_expires,
        "cancel_requested": int(batch.cancel_requested),
    }


def _remote(row: Row[Any]) -> RemoteBatch:
    return RemoteBatch(
        id=row.id,
        batch_id=row.batch_id,
        route=row.route,
        endpoint=row.endpoint,
        model=row.model,
        step=RemoteStep(row.step),
        line_count=row.line_count,
        created_at=row.created_at,
        updated_at=row.updated_at,
        remote_id=row.remote_id,
        status=row.status,
        request_counts=dict(row.request_counts or {}),
        input_file_id=row.input_file_id,
        output_file_id=row.output_file_id,
        error_file_id=row.error_file_id,
        source_file_ids=dict(row.source_file_ids or {}),
        bytes=row.bytes,
        worker_id=row.worker_id,
        lease_expires=row.lease_expires,
        collect_failures=row.collect_failures,
        cancel_requested=bool(row.cancel_requested),
        error=row.error,
        submitted_at=row.submitted_at,
        finished_at=row.finished_at,
    )


def _start(row: Row[Any]) -> AttemptStart:
    return AttemptStart(
        id=row.a_id,
        job_id=row.id,
        batch_id=row.batch_id,
        worker_id=row.a_worker or "",
        route=row.route,
        provider=row.a_provider,
        shape=row.a_shape,
        endpoint=row.a_endpoint,
        model=row.a_model,
        billing_unit=row.a_billing,
        params=row.a_params,
        worst_case_usd=row.a_worst,
        started_at=row.a_started,
    )
