"""Queue verbs: batches, enqueue, claim, leases, recovery, requeue and cancel."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from itertools import islice
from typing import Any

from sqlalchemy import Connection, Select, and_, func, insert, or_, select, text, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from runner.errors import NotFound, UsageError
from runner.models import (
    AttemptState,
    ChargeStatus,
    Job,
    JobSpec,
    JobState,
    Outcome,
    SourceImage,
    utcnow,
)
from runner.store.bulk import JobRows, jobs_raw, roomy_cache
from runner.store.engine import reading, run_write, writing
from runner.store.records import BatchInfo, EnqueueResult, Recovery
from runner.store.tables import attempts, batches, jobs

_CHUNK = 2000


def _batch_info(row: Row[Any]) -> BatchInfo:
    return BatchInfo(
        id=row.id,
        name=row.name,
        route=row.route,
        manifest=row.manifest,
        job_count=row.job_count,
        budget_usd=row.budget_usd,
        created_at=row.created_at,
    )


def _chunks(items: Iterable[JobSpec], size: int) -> Iterator[list[JobSpec]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


class _NothingNew(Exception):
    """Rolls back a submit that would create a batch with no job in it."""


def new_batch_id() -> str:
    return "b" + secrets.token_hex(6)


class QueueOps:
    """Batch and job-queue verbs. Mixed into :class:`runner.store.Store`."""

    engine: AsyncEngine
    dialect: str

    async def find_batch(self, ref: str) -> BatchInfo:
        """A batch by id or by name."""
        async with reading(self.engine) as conn:
            row = (
                await conn.execute(
                    select(batches).where(or_(batches.c.id == ref, batches.c.name == ref))
                )
            ).first()
        if row is None:
            raise NotFound(f"no batch with id or name {ref!r} (see `imagerun status`)")
        return _batch_info(row)

    async def list_batches(self) -> list[BatchInfo]:
        async with reading(self.engine) as conn:
            rows = await conn.execute(select(batches).order_by(batches.c.created_at))
            return [_batch_info(r) for r in rows]

    async def submit(
        self,
        *,
        name: str,
        route: str,
        manifest: str,
        manifest_sha256: str,
        route_snapshot: Mapping[str, Any],
        budget_usd: float | None,
        specs: Iterable[JobSpec],
    ) -> EnqueueResult:
        """Create (or reuse) the batch called ``name`` and enqueue ``specs`` atomically.

        Jobs whose key is already in the database (in this batch or any other) are skipped, so
        re-submitting a manifest adds nothing. When nothing is added and the batch would be
        new, nothing is created at all.
        """
        now = utcnow()
        try:
            async with writing(self.engine) as conn:
                batch, created = await self._batch_for(
                    conn, name, route, manifest, manifest_sha256, route_snapshot, budget_usd, now
                )
                async with roomy_cache(conn):
                    added, existing, owners = await self._enqueue(conn, batch.id, specs, now)
                if added == 0 and created:
                    raise _NothingNew
                if added:
                    await conn.execute(
                        update(batches)
                        .where(batches.c.id == batch.id)
                        .values(job_count=batches.c.job_count + added)
                    )
        except _NothingNew:
            # Every job is already queued elsewhere: do not leave an empty batch behind.
            return EnqueueResult(batch=batch, added=0, existing=existing, existing_batches=owners)
        batch = await self.find_batch(batch.id)
        return EnqueueResult(
            batch=batch,
            added=added,
            existing=existing,
            existing_batches=owners,
            batch_created=created,
        )

    async def _enqueue(
        self, conn: AsyncConnection, batch_id: str, specs: Iterable[JobSpec], now: datetime
    ) -> tuple[int, int, dict[str, str]]:
        """Insert the specs whose key is new; returns (added, existing, owning batches)."""
        added = existing = 0
        owners: dict[str, str] = {}
        rows = JobRows(conn.dialect, batch_id, now)
        for chunk in _chunks(specs, _CHUNK):
            present = await self._present_keys(conn, [s.key for s in chunk])
            owners.update(present.values())
            fresh = [s for s in chunk if s.key not in present]
            existing += len(chunk) - len(fresh)
            if fresh:
                await conn.execute(insert(jobs_raw), [rows.row(s) for s in fresh])
                added += len(fresh)
        return added, existing, owners

    async def _batch_for(
        self,
        conn: AsyncConnection,
        name: str,
        route: str,
        manifest: str,
        manifest_sha256: str,
        route_snapshot: Mapping[str, Any],
        budget_usd: float | None,
        now: datetime,
    ) -> tuple[BatchInfo, bool]:
        row = (await conn.execute(select(batches).where(batches.c.name == name))).first()
        if row is not None:
            if row.route != route:
                raise UsageError(
                    f"batch {name!r} already exists on route {row.route!r}; "
                    "pass --name to submit on another route"
                )
            if budget_usd is not None:
                await conn.execute(
                    update(batches).where(batches.c.id == row.id).values(budget_usd=budget_usd)
                )
            return _batch_info(row), False
        batch_id = new_batch_id()
        values = {
            "id": batch_id,
            "name": name,
            "route": route,
            "manifest": manifest,
            "manifest_sha256": manifest_sha256,
            "job_count": 0,
            "budget_usd": budget_usd,
            "route_snapshot": dict(route_snapshot),
            "created_at": now,
        }
        await conn.execute(insert(batches).values(**values))
        info = BatchInfo(
            id=batch_id,
            name=name,
            route=route,
            manifest=manifest,
            job_count=0,
            budget_usd=budget_usd,
            created_at=now,
        )
        return info, True

    async def _present_keys(
        self, conn: AsyncConnection, keys: list[str]
    ) -> dict[str, tuple[str, str]]:
        rows = await conn.execute(
            select(jobs.c.key, batches.c.id, batches.c.name)
            .join(batches, batches.c.id == jobs.c.batch_id)
            .where(jobs.c.key.in_(keys))
        )
        return {r.key: (r.id, r.name) for r in rows}

    async def claim(
        self,
        *,
        worker_id: str,
        batch_ids: list[str],
        limit: int,
        lease_seconds: float,
        cap: int | None = None,
    ) -> list[Job]:
        """Lease up to ``limit`` runnable jobs (queued, or waiting and due) to ``worker_id``.

        With ``cap``, never more than ``cap`` jobs of these batches are leased at once by all
        workers together (a route's global concurrency, counted from live leases).
        """
        now = utcnow()
        # Queued jobs and due retries are looked up apart, each oldest first, then merged: a
        # single ``queued OR (waiting AND due)`` condition cannot walk the (batch_id, state)
        # index in id order, so it sorted every runnable job of the batches on every claim
        # (a quarter of a second with a million queued).
        branches = [
            jobs.c.state == JobState.QUEUED.value,
            and_(jobs.c.state == JobState.WAITING.value, jobs.c.next_at <= now),
        ]
        queries = []
        for runnable in branches:
            query = (
                select(jobs, batches.c.route)
                .join(batches, batches.c.id == jobs.c.batch_id)
                .where(jobs.c.batch_id.in_(batch_ids), runnable)
                .order_by(jobs.c.id)
            )
            if self.dialect == "postgresql":
                # Concurrent claimers skip each other's rows instead of queueing behind them.
                query = query.with_for_update(of=jobs, skip_locked=True)
            queries.append(query)
        lease = {
            "state": JobState.RUNNING.value,
            "lease_owner": worker_id,
            "lease_expires": now + timedelta(seconds=lease_seconds),
            "updated_at": now,
        }
        return await run_write(self.engine, _lease, queries, lease, cap, batch_ids, limit)

    async def next_due(self, batch_ids: list[str]) -> datetime | None:
        """When the earliest waiting job becomes runnable (``None`` if none is waiting)."""
        async with reading(self.engine) as conn:
            due: datetime | None = await conn.scalar(
                select(func.min(jobs.c.next_at)).where(
                    jobs.c.batch_id.in_(batch_ids), jobs.c.state == JobState.WAITING.value
                )
            )
        return due

    async def count_states(
        self, batch_ids: list[str], states: Iterable[JobState] | None = None
    ) -> dict[JobState, int]:
        """Jobs of these batches by state (only ``states`` if given).

        Counting walks one index entry per job counted: narrow ``states`` to what is small.
        """
        query = select(jobs.c.state, func.count()).where(jobs.c.batch_id.in_(batch_ids))
        if states is not None:
            query = query.where(jobs.c.state.in_([s.value for s in states]))
        async with reading(self.engine) as conn:
            rows = await conn.execute(query.group_by(jobs.c.state))
            return {JobState(state): count for state, count in rows}

    async def any_live(self, batch_ids: list[str]) -> bool:
        """Whether any job of these batches is queued, waiting or running (one index probe)."""
        live = [JobState.QUEUED.value, JobState.WAITING.value, JobState.RUNNING.value]
        async with reading(self.engine) as conn:
            found = await conn.scalar(
                select(jobs.c.id)
                .where(jobs.c.batch_id.in_(batch_ids), jobs.c.state.in_(live))
                .limit(1)
            )
        return found is not None

    async def heartbeat(self, worker_id: str, job_ids: list[int], lease_seconds: float) -> int:
        """Extend the leases ``worker_id`` holds on ``job_ids``; returns how many it still holds."""
        if not job_ids:
            return 0
        now = utcnow()
        mine = select(jobs.c.id).where(
            jobs.c.id.in_(job_ids),
            jobs.c.lease_owner == worker_id,
            jobs.c.state == JobState.RUNNING.value,
        )
        if self.dialect == "postgresql":
            # Skip rows another transaction holds (our own ledger commit finishing those jobs):
            # waiting for them while holding the others, locked in another order, deadlocks.
            # A skipped job is either done or extended by the next beat, well within the lease.
            mine = mine.with_for_update(skip_locked=True, key_share=True)
        async with writing(self.engine) as conn:
            result = await conn.execute(
                update(jobs)
                .where(jobs.c.id.in_(mine))
                .values(lease_expires=now + timedelta(seconds=lease_seconds))
            )
            return int(result.rowcount)

    async def recover_expired(self, *, resend_routes: frozenset[str] = frozenset()) -> Recovery:
        """Take back running jobs whose lease ran out (their worker died or hung).

        A job whose last attempt never left goes back to the queue. A job with an attempt still
        ``sending`` may have reached the provider (and been charged): that attempt is closed as
        ``lost`` and the job becomes ``unknown``, unless its route's policy is ``resend``.
        """
        now = utcnow()
        query = (
            select(jobs.c.id, batches.c.route)
            .join(batches, batches.c.id == jobs.c.batch_id)
            .where(jobs.c.state == JobState.RUNNING.value, jobs.c.lease_expires < now)
        )
        if self.dialect == "postgresql":
            query = query.with_for_update(of=jobs, skip_locked=True)
        async with writing(self.engine) as conn:
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

    async def requeue(self, batch_id: str, states: Iterable[JobState]) -> int:
        """Put jobs in ``states`` back in the queue (``imagerun retry``)."""
        now = utcnow()
        async with writing(self.engine) as conn:
            result = await conn.execute(
                update(jobs)
                .where(jobs.c.batch_id == batch_id, jobs.c.state.in_([s.value for s in states]))
                .values(
                    state=JobState.QUEUED.value,
                    next_at=None,
                    lease_owner=None,
                    lease_expires=None,
                    finished_at=None,
                    updated_at=now,
                )
            )
            return int(result.rowcount)

    async def cancel(self, batch_id: str) -> int:
        """Cancel every job of the batch that is not running or finished."""
        now = utcnow()
        states = [JobState.QUEUED.value, JobState.WAITING.value, JobState.UNKNOWN.value]
        async with writing(self.engine) as conn:
            result = await conn.execute(
                update(jobs)
                .where(jobs.c.batch_id == batch_id, jobs.c.state.in_(states))
                .values(state=JobState.CANCELLED.value, finished_at=now, updated_at=now)
            )
            return int(result.rowcount)


def _lease(
    conn: Connection,
    queries: list[Select[Any]],
    values: dict[str, Any],
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
    found = [row for query in queries for row in conn.execute(query.limit(room))]
    rows = sorted(found, key=lambda row: int(row.id))[:room]
    if rows:
        conn.execute(update(jobs).where(jobs.c.id.in_([r.id for r in rows])).values(**values))
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


def _job(row: Row[Any]) -> Job:
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
    )
