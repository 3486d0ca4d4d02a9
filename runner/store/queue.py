"""Queue verbs: batches, enqueue, claim, leases, recovery, requeue and cancel."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from itertools import islice
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.engine import Row

from runner.errors import NotFound, UsageError
from runner.models import (
    JobSpec,
    JobState,
    RemoteStep,
    utcnow,
)
from runner.store.bulk import JobRows, jobs_raw, roomy_cache
from runner.store.database import Database
from runner.store.outage import retried
from runner.store.records import BatchInfo, EnqueueResult
from runner.store.tables import batches, jobs, remote_batches

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

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
    """The :class:`runner.abc.Queue` verbs. Mixed into :class:`runner.store.Store`."""

    db: Database

    @retried
    async def find_batch(self, ref: str) -> BatchInfo:
        async with self.db.reading() as conn:
            row = (
                await conn.execute(
                    select(batches).where(or_(batches.c.id == ref, batches.c.name == ref))
                )
            ).first()
        if row is None:
            raise NotFound(f"no batch with id or name {ref!r} (see `imagerun status`)")
        return _batch_info(row)

    @retried
    async def list_batches(self) -> list[BatchInfo]:
        async with self.db.reading() as conn:
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
        exact: bool = False,
    ) -> EnqueueResult:
        now = utcnow()
        try:
            async with self.db.writing() as conn:
                batch, created = await self._batch_for(
                    conn, name, route, manifest, manifest_sha256, route_snapshot, budget_usd, now
                )
                async with roomy_cache(conn):
                    added, existing, owners = await self._enqueue(conn, batch.id, specs, now)
                if exact:
                    _require_exact(batch, created, added, existing, owners)
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

    @retried
    async def batch_keys(self, batch_id: str) -> set[str]:
        async with self.db.reading() as conn:
            rows = await conn.scalars(select(jobs.c.key).where(jobs.c.batch_id == batch_id))
            return set(rows)

    async def _present_keys(
        self, conn: AsyncConnection, keys: list[str]
    ) -> dict[str, tuple[str, str]]:
        rows = await conn.execute(
            select(jobs.c.key, batches.c.id, batches.c.name)
            .join(batches, batches.c.id == jobs.c.batch_id)
            .where(jobs.c.key.in_(keys))
        )
        return {r.key: (r.id, r.name) for r in rows}

    @retried
    async def next_due(self, batch_ids: list[str]) -> datetime | None:
        async with self.db.reading() as conn:
            due: datetime | None = await conn.scalar(
                select(func.min(jobs.c.next_at)).where(
                    jobs.c.batch_id.in_(batch_ids), jobs.c.state == JobState.WAITING.value
                )
            )
        return due

    @retried
    async def count_states(
        self, batch_ids: list[str], states: Iterable[JobState] | None = None
    ) -> dict[JobState, int]:
        query = select(jobs.c.state, func.count()).where(jobs.c.batch_id.in_(batch_ids))
        if states is not None:
            query = query.where(jobs.c.state.in_([s.value for s in states]))
        async with self.db.reading() as conn:
            rows = await conn.execute(query.group_by(jobs.c.state))
            return {JobState(state): count for state, count in rows}

    @retried
    async def any_live(self, batch_ids: list[str]) -> bool:
        """Whether a run has anything to do: a job to send or settle, or a remote batch not
        ended (one stopped after its last line was applied still has its files to delete)."""
        live = [JobState.QUEUED.value, JobState.WAITING.value, JobState.RUNNING.value]
        ended = [s.value for s in RemoteStep if s.ended]
        async with self.db.reading() as conn:
            found = await conn.scalar(
                select(jobs.c.id)
                .where(jobs.c.batch_id.in_(batch_ids), jobs.c.state.in_(live))
                .limit(1)
            )
            if found is None:
                found = await conn.scalar(
                    select(remote_batches.c.id)
                    .where(
                        remote_batches.c.batch_id.in_(batch_ids),
                        remote_batches.c.step.not_in(ended),
                    )
                    .limit(1)
                )
        return found is not None

    @retried
    async def requeue(self, batch_id: str, states: Iterable[JobState]) -> int:
        now = utcnow()
        async with self.db.writing() as conn:
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

    @retried
    async def cancel(self, batch_id: str) -> int:
        now = utcnow()
        states = [JobState.QUEUED.value, JobState.WAITING.value, JobState.UNKNOWN.value]
        async with self.db.writing() as conn:
            result = await conn.execute(
                update(jobs)
                .where(jobs.c.batch_id == batch_id, jobs.c.state.in_(states))
                .values(state=JobState.CANCELLED.value, finished_at=now, updated_at=now)
            )
            return int(result.rowcount)


def _require_exact(
    batch: BatchInfo, created: bool, added: int, existing: int, owners: Mapping[str, str]
) -> None:
    """Raise (rolling the submission back) unless ``batch`` ends up holding exactly the specs:
    a new batch of new jobs, or an existing one that already held every one of them."""
    others = sorted(name for bid, name in owners.items() if bid != batch.id)
    if created and not existing:
        return
    if not created and not added and not others and batch.job_count == existing:
        return
    where = f" (some are jobs of {', '.join(others)})" if others else ""
    raise UsageError(
        f"batch {batch.name!r} would not hold exactly these {added + existing} line(s){where}: "
        "a batch of that name holds other jobs, or a line changed since it was made; "
        "nothing was enqueued"
    )
