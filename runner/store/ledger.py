"""Ledger verbs: an attempt row is written before its request leaves and finished after.

Each finishing verb closes the attempt *and* moves its job in one transaction, so the ledger
and the queue never disagree about what happened.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import exists, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from runner.errors import StoreError
from runner.models import AttemptState, ChargeStatus, JobState, utcnow
from runner.store.engine import writing
from runner.store.records import AttemptResult, AttemptStart, OutputRecord
from runner.store.tables import attempts, jobs, outputs


class LeaseLost(StoreError):
    """The job is no longer leased to this worker (it was recovered elsewhere); do not send."""


class LedgerOps:
    """Attempt and job-completion verbs. Mixed into :class:`runner.store.Store`."""

    engine: AsyncEngine

    async def start_attempt(self, start: AttemptStart) -> None:
        """Record that a request is about to leave. Commits before returning.

        Raises:
            LeaseLost: the job's lease is no longer ours; the request must not be sent.
        """
        async with writing(self.engine) as conn:
            result = await conn.execute(
                update(jobs)
                .where(
                    jobs.c.id == start.job_id,
                    jobs.c.lease_owner == start.worker_id,
                    jobs.c.state == JobState.RUNNING.value,
                )
                .values(
                    attempts=jobs.c.attempts + 1,
                    first_attempt_at=func.coalesce(jobs.c.first_attempt_at, start.started_at),
                    updated_at=start.started_at,
                )
            )
            if result.rowcount != 1:
                raise LeaseLost(f"job {start.job_id} is no longer leased to {start.worker_id}")
            number = await conn.scalar(select(jobs.c.attempts).where(jobs.c.id == start.job_id))
            await conn.execute(
                insert(attempts).values(
                    **asdict(start),
                    number=number,
                    state=AttemptState.SENDING.value,
                    charge_status=ChargeStatus.UNKNOWN.value,
                    charge_evidence="policy",
                )
            )

    async def complete(self, result: AttemptResult, files: Sequence[OutputRecord]) -> None:
        """The attempt succeeded and its outputs are on disk: record them, finish the job."""
        async with writing(self.engine) as conn:
            await _finish_attempt(conn, result)
            if files:
                await conn.execute(insert(outputs), [asdict(f) for f in files])
            await _move_job(conn, result, JobState.SUCCEEDED, finished=True)

    async def retry_later(self, result: AttemptResult, at: datetime) -> None:
        """The attempt failed in a retryable way: the job waits until ``at``."""
        async with writing(self.engine) as conn:
            await _finish_attempt(conn, result)
            await _move_job(conn, result, JobState.WAITING, next_at=at)

    async def fail(self, result: AttemptResult) -> None:
        """The attempt failed for good: the job is ``failed``."""
        async with writing(self.engine) as conn:
            await _finish_attempt(conn, result)
            await _move_job(conn, result, JobState.FAILED, finished=True)

    async def release(self, result: AttemptResult | None, job_id: int, state: JobState) -> None:
        """Give the job back without a verdict (route stopped, run interrupted)."""
        async with writing(self.engine) as conn:
            if result is not None:
                await _finish_attempt(conn, result)
            values: dict[str, Any] = {
                "state": state.value,
                "lease_owner": None,
                "lease_expires": None,
                "updated_at": utcnow(),
            }
            if result is not None:
                values["last_outcome"] = result.outcome.value
                values["last_error"] = result.error_message
            await conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))

    async def fail_unsent(self, job_id: int, outcome: str, message: str) -> None:
        """Fail a job before any request left (e.g. its source image cannot be read)."""
        now = utcnow()
        async with writing(self.engine) as conn:
            await conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(
                    state=JobState.FAILED.value,
                    lease_owner=None,
                    lease_expires=None,
                    last_outcome=outcome,
                    last_error=message,
                    updated_at=now,
                    finished_at=now,
                )
            )

    async def release_unstarted(self, worker_id: str, job_ids: Sequence[int]) -> int:
        """Return claimed jobs that never started an attempt to the queue (graceful stop)."""
        if not job_ids:
            return 0
        async with writing(self.engine) as conn:
            result = await conn.execute(
                update(jobs)
                .where(
                    jobs.c.id.in_(list(job_ids)),
                    jobs.c.lease_owner == worker_id,
                    jobs.c.state == JobState.RUNNING.value,
                    # A job with a request possibly out is left for recovery to judge.
                    ~exists().where(
                        attempts.c.job_id == jobs.c.id,
                        attempts.c.state == AttemptState.SENDING.value,
                    ),
                )
                .values(
                    state=JobState.QUEUED.value,
                    lease_owner=None,
                    lease_expires=None,
                    updated_at=utcnow(),
                )
            )
            return int(result.rowcount)


async def _finish_attempt(conn: AsyncConnection, result: AttemptResult) -> None:
    values = asdict(result)
    del values["id"], values["job_id"]
    values["state"] = AttemptState.DONE.value
    values["outcome"] = result.outcome.value
    values["charge_status"] = result.charge_status.value
    values["charge_evidence"] = result.charge_evidence.value
    await conn.execute(update(attempts).where(attempts.c.id == result.id).values(**values))


async def _move_job(
    conn: AsyncConnection,
    result: AttemptResult,
    state: JobState,
    *,
    finished: bool = False,
    next_at: datetime | None = None,
) -> None:
    await conn.execute(
        update(jobs)
        .where(jobs.c.id == result.job_id)
        .values(
            state=state.value,
            next_at=next_at,
            lease_owner=None,
            lease_expires=None,
            last_outcome=result.outcome.value,
            last_error=result.error_message,
            updated_at=result.finished_at,
            finished_at=result.finished_at if finished else None,
        )
    )
