"""Lease verbs: claim runnable jobs, keep leases alive, take back a dead worker's jobs."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Select, and_, bindparam, func, select, text, update
from sqlalchemy.engine import Row

from runner.models import (
    AttemptState,
    ChargeStatus,
    Job,
    JobState,
    Outcome,
    SourceImage,
    utcnow,
)
from runner.store.database import Database
from runner.store.outage import retried
from runner.store.records import Recovery
from runner.store.tables import attempts, batches, jobs

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

#: Jobs whose leases one heartbeat statement extends.
HEARTBEAT_CHUNK = 10_000


class LeaseOps:
    """The :class:`runner.abc.Leases` claim and heartbeat, and :class:`runner.abc.LeaseRecovery`.

    Mixed into :class:`runner.store.Store`.
    """

    db: Database

    @retried
    async def claim(
        self,
        *,
        worker_id: str,
        batch_ids: list[str],
        limit: int,
        lease_seconds: float,
        cap: int | None = None,
    ) -> list[Job]:
        now = utcnow()
        params = {
            "batch_ids": batch_ids,
            "now": now,
            "v_state": JobState.RUNNING.value,
            "v_owner": worker_id,
            "v_expires": now + timedelta(seconds=lease_seconds),
            "v_at": now,
        }
        queries = _claim_queries(self.db.dialect == "postgresql")
        return await self.db.run_write(_lease, queries, params, cap, batch_ids, limit)

    @retried
    async def heartbeat(self, worker_id: str, job_ids: list[int], lease_seconds: float) -> int:
        if not job_ids:
            return 0
        now = utcnow()
        extended = 0
        async with self.db.writing() as conn:
            # In chunks: a remote lane holds up to a remote batch's worth of jobs (50,000) while
            # it gathers them, and SQLite binds at most 32,766 variables a statement.
            for start in range(0, len(job_ids), HEARTBEAT_CHUNK):
                mine = select(jobs.c.id).where(
                    jobs.c.id.in_(job_ids[start : start + HEARTBEAT_CHUNK]),
                    jobs.c.lease_owner == worker_id,
                    jobs.c.state == JobState.RUNNING.value,
                )
                if self.db.dialect == "postgresql":
                    # Skip rows another transaction holds (our own ledger commit finishing
                    # those jobs): waiting for them while holding the others, locked in another
                    # order, deadlocks. A skipped job is either done or extended by the next
                    # beat, well within the lease.
                    mine = mine.with_for_update(skip_locked=True, key_share=True)
                result = await conn.execute(
                    update(jobs)
                    .where(jobs.c.id.in_(mine))
                    .values(lease_expires=now + timedelta(seconds=lease_seconds))
                )
                extended += int(result.rowcount)
        return extended

    @retried
    async def recover_expired(self, *, resend_routes: frozenset[str] = frozenset()) -> Recovery:
        now = utcnow()
        lapsed = (jobs.c.state == JobState.RUNNING.value, jobs.c.lease_expires < now)
        async with self.db.reading() as conn:
            # Most calls find nothing: then no write transaction (on SQLite, no wait for the
            # write lock a run holds) is opened at all.
            if await conn.scalar(select(jobs.c.id).where(*lapsed).limit(1)) is None:
                return Recovery()
        query = (
            select(jobs.c.id, batches.c.route)
            .join(batches, batches.c.id == jobs.c.batch_id)
            .where(*lapsed)
        )
        if self.db.dialect == "postgresql":
            query = query.with_for_update(of=jobs, skip_locked=True)
        async with self.db.writing() as conn:
            expired = {r.id: r.route for r in await conn.execute(query)}
            if not expired:
                return Recovery()
            in_flight = set(
                await conn.scalars(
                    select(attempts.c.job_id).where(
                        attempts.c.job_id.in_(list(expired)),
                        attempts.c.state == AttemptState.SENDING.value,
                    )
                )
            )
            await conn.execute(
                update(attempts)
                .where(
                    attempts.c.job_id.in_(list(in_flight)),
                    attempts.c.state == AttemptState.SENDING.value,
                )
                .values(
                    state=AttemptState.DONE.value,
                    outcome=Outcome.LOST.value,
                    finished_at=now,
                    charge_status=ChargeStatus.UNKNOWN.value,
                    error_message="worker stopped while the request was in flight",
                )
            )
            resend = {j for j in in_flight if expired[j] in resend_routes}
            hold = in_flight - resend
            back = [j for j in expired if j not in hold]
            await _set_state(conn, back, JobState.QUEUED, now, outcome=None)
            await _set_state(conn, list(hold), JobState.UNKNOWN, now, outcome=Outcome.LOST)
        return Recovery(requeued=len(back) - len(resend), unknown=len(hold), resent=len(resend))


@functools.cache
def _claim_queries(postgres: bool) -> tuple[Select[Any], ...]:
    """The claim's two lookups, built once (values bound per claim: ``batch_ids``, ``now``).

    Queued jobs and due retries are looked up apart, each oldest first, then merged: a single
    ``queued OR (waiting AND due)`` condition cannot walk the (batch_id, state) index in id
    order, so it sorted every runnable job of the batches on every claim (a quarter of a
    second with a million queued).
    """
    branches = [
        jobs.c.state == JobState.QUEUED.value,
        and_(jobs.c.state == JobState.WAITING.value, jobs.c.next_at <= bindparam("now")),
    ]
    queries = []
    for runnable in branches:
        query = (
            select(*JOB_COLUMNS, batches.c.route)
            .join(batches, batches.c.id == jobs.c.batch_id)
            .where(jobs.c.batch_id.in_(bindparam("batch_ids", expanding=True)), runnable)
            .order_by(jobs.c.id)
        )
        if postgres:
            # Concurrent claimers skip each other's rows instead of queueing behind them.
            query = query.with_for_update(of=jobs, skip_locked=True)
        queries.append(query)
    return tuple(queries)


_TAKE = (
    update(jobs)
    .where(jobs.c.id.in_(bindparam("ids", expanding=True)))
    .values(
        state=bindparam("v_state"),
        lease_owner=bindparam("v_owner"),
        lease_expires=bindparam("v_expires"),
        updated_at=bindparam("v_at"),
    )
)


def _lease(
    conn: Connection,
    queries: tuple[Select[Any], ...],
    params: dict[str, Any],
    cap: int | None,
    batch_ids: list[str],
    limit: int,
) -> list[Job]:
    room = limit
    if cap is not None:
        # The cap belongs to the route, not to this worker's batches: workers started at
        # different times (or naming different batches) of one route share it.
        routes = sorted(
            conn.scalars(select(batches.c.route).where(batches.c.id.in_(batch_ids)).distinct())
        )
        if conn.dialect.name == "postgresql":
            # Claimers of one route take turns here, so two cannot both see room for the last
            # slot (SQLite's BEGIN IMMEDIATE already serialises them).
            conn.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": ",".join(routes)}
            )
        leased = conn.scalar(
            select(func.count())
            .select_from(jobs.join(batches, batches.c.id == jobs.c.batch_id))
            .where(batches.c.route.in_(routes), jobs.c.state == JobState.RUNNING.value)
        )
        room = min(limit, cap - int(leased or 0))
        if room <= 0:
            return []
    # On PostgreSQL the rows found but not taken stay locked only until this transaction ends.
    found = [row for query in queries for row in conn.execute(query.limit(room), params)]
    rows = sorted(found, key=lambda row: int(row.id))[:room]
    if rows:
        conn.execute(_TAKE, {**params, "ids": [r.id for r in rows]})
    return [_job(r) for r in rows]


async def _set_state(
    conn: AsyncConnection,
    job_ids: list[int],
    state: JobState,
    now: datetime,
    *,
    outcome: Outcome | None,
) -> None:
    if not job_ids:
        return
    values: dict[str, Any] = {
        "state": state.value,
        "lease_owner": None,
        "lease_expires": None,
        "updated_at": now,
    }
    if outcome is not None:
        values["last_outcome"] = outcome.value
    await conn.execute(update(jobs).where(jobs.c.id.in_(job_ids)).values(**values))


#: The columns :func:`_job` reads: a claim converts no other (``meta`` is JSON, the lease and
#: bookkeeping times are datetimes parsed from text on SQLite, all of them unused here).
JOB_COLUMNS = (
    jobs.c.id,
    jobs.c.batch_id,
    jobs.c.ext_id,
    jobs.c.prompt,
    jobs.c.params,
    jobs.c.images,
    jobs.c.mask,
    jobs.c.attempts,
    jobs.c.created_at,
    jobs.c.first_attempt_at,
    jobs.c.last_outcome,
)


def _job(row: Row[Any]) -> Job:
    """A claimed job from a row holding ``JOB_COLUMNS`` and its batch's ``route``."""
    return Job(
        id=row.id,
        batch_id=row.batch_id,
        route=row.route,
        ext_id=row.ext_id,
        prompt=row.prompt,
        params=row.params,
        images=tuple(SourceImage.from_json(i) for i in row.images),
        mask=SourceImage.from_json(row.mask) if row.mask else None,
        attempts=row.attempts,
        created_at=row.created_at,
        first_attempt_at=row.first_attempt_at,
        last_outcome=row.last_outcome,
    )
