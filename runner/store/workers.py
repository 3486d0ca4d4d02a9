"""Worker registry: who is running, where, and whether they are still alive."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, insert, select, update

from runner.files.procs import pid_alive
from runner.models import JobState, utcnow
from runner.store.database import Database
from runner.store.outage import retried
from runner.store.tables import jobs, workers


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerInfo:
    id: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    running_jobs: int


class WorkerOps:
    """The :class:`runner.abc.Workers` verbs. Mixed into :class:`runner.store.Store`."""

    db: Database

    @retried
    async def register_worker(self, worker_id: str, host: str, pid: int) -> None:
        now = utcnow()
        async with self.db.writing() as conn:
            await conn.execute(
                insert(workers).values(
                    id=worker_id, host=host, pid=pid, started_at=now, heartbeat_at=now
                )
            )

    @retried
    async def worker_heartbeat(self, worker_id: str) -> None:
        async with self.db.writing() as conn:
            await conn.execute(
                update(workers).where(workers.c.id == worker_id).values(heartbeat_at=utcnow())
            )

    @retried
    async def stop_worker(self, worker_id: str) -> None:
        now = utcnow()
        async with self.db.writing() as conn:
            await conn.execute(
                update(workers).where(workers.c.id == worker_id).values(stopped_at=now)
            )
            # A stopped worker holds nothing: jobs it could not give back (the database was
            # away) are judged by the next recovery at once, not a lease later.
            await conn.execute(
                update(jobs)
                .where(jobs.c.lease_owner == worker_id, jobs.c.state == JobState.RUNNING.value)
                .values(lease_expires=now - timedelta(seconds=1))
            )

    @retried
    async def expire_dead_local_workers(self, host: str) -> int:
        async with self.db.reading() as conn:
            rows = (
                await conn.execute(
                    select(workers.c.id, workers.c.pid).where(
                        workers.c.host == host, workers.c.stopped_at.is_(None)
                    )
                )
            ).all()
        dead = [r.id for r in rows if not pid_alive(r.pid)]
        if not dead:
            return 0
        now = utcnow()
        async with self.db.writing() as conn:
            await conn.execute(
                update(jobs)
                .where(jobs.c.lease_owner.in_(dead), jobs.c.state == JobState.RUNNING.value)
                .values(lease_expires=now - timedelta(seconds=1))
            )
            await conn.execute(update(workers).where(workers.c.id.in_(dead)).values(stopped_at=now))
        return len(dead)

    @retried
    async def list_workers(self, *, live_within: float = 120.0) -> list[WorkerInfo]:
        since = utcnow() - timedelta(seconds=live_within)
        async with self.db.reading() as conn:
            rows = (
                await conn.execute(
                    select(workers).where(
                        workers.c.stopped_at.is_(None), workers.c.heartbeat_at >= since
                    )
                )
            ).all()
            counted = await conn.execute(
                select(jobs.c.lease_owner, func.count())
                .where(jobs.c.state == JobState.RUNNING.value)
                .group_by(jobs.c.lease_owner)
            )
            running: dict[str, int] = dict(counted.all())
        return [
            WorkerInfo(
                id=r.id,
                host=r.host,
                pid=r.pid,
                started_at=r.started_at,
                heartbeat_at=r.heartbeat_at,
                stopped_at=r.stopped_at,
                running_jobs=running.get(r.id, 0),
            )
            for r in rows
        ]
