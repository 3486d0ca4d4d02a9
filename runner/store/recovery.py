"""Verbs for resuming after a crash: reconcile image files on disk with recorded outputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

from sqlalchemy import insert, select, update

from runner.files.adopt import JobFiles
from runner.files.outputs import OutputRecord
from runner.models import AttemptState, ChargeStatus, JobState, Outcome, utcnow
from runner.store.database import Database
from runner.store.outage import retried
from runner.store.tables import attempts, jobs, outputs


class RecoveryOps:
    """The :class:`runner.abc.FileAdoption` verbs. Mixed into :class:`runner.store.Store`."""

    db: Database

    @retried
    async def recorded_paths(self, batch_ids: Sequence[str]) -> set[str]:
        async with self.db.reading() as conn:
            rows = await conn.execute(
                select(outputs.c.path).where(outputs.c.batch_id.in_(list(batch_ids)))
            )
            return {r.path for r in rows}

    @retried
    async def jobs_for_files(self, job_ids: Sequence[int]) -> dict[int, JobFiles]:
        ids = list(job_ids)
        async with self.db.reading() as conn:
            found = {
                r.id: r
                for r in await conn.execute(
                    select(
                        jobs.c.id,
                        jobs.c.batch_id,
                        jobs.c.state,
                        jobs.c.prompt,
                        jobs.c.params,
                        jobs.c.images,
                        jobs.c.mask,
                    ).where(jobs.c.id.in_(ids))
                )
            }
            recorded: dict[int, set[str]] = {}
            for r in await conn.execute(
                select(outputs.c.job_id, outputs.c.path).where(outputs.c.job_id.in_(ids))
            ):
                recorded.setdefault(r.job_id, set()).add(r.path)
            lost: dict[int, str] = {}
            for r in await conn.execute(
                select(attempts.c.job_id, attempts.c.id)
                .where(attempts.c.job_id.in_(ids), attempts.c.outcome == Outcome.LOST.value)
                .order_by(attempts.c.started_at)
            ):
                lost[r.job_id] = r.id
        return {
            job_id: JobFiles(
                job_id=job_id,
                batch_id=row.batch_id,
                state=JobState(row.state),
                prompt=row.prompt,
                params=row.params,
                images=len(row.images),
                mask=row.mask is not None,
                recorded=frozenset(recorded.get(job_id, ())),
                lost_attempt=lost.get(job_id),
            )
            for job_id, row in found.items()
        }

    @retried
    async def adopt(
        self,
        job_id: int,
        attempt_id: str,
        files: Sequence[OutputRecord],
        expected_usd: float,
        *,
        refused: str | None = None,
    ) -> bool:
        now = utcnow()
        async with self.db.writing() as conn:
            moved = await conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.state == JobState.UNKNOWN.value)
                .values(
                    state=(JobState.SUCCEEDED if refused is None else JobState.FAILED).value,
                    last_outcome=Outcome.OK.value,
                    last_error=refused,
                    finished_at=now,
                    updated_at=now,
                )
            )
            if moved.rowcount != 1:
                return False
            await conn.execute(insert(outputs), [asdict(f) for f in files])
            await conn.execute(
                update(attempts)
                .where(attempts.c.id == attempt_id)
                .values(
                    state=AttemptState.DONE.value,
                    outcome=Outcome.OK.value,
                    images_returned=len(files),
                    expected_usd=expected_usd,
                    charge_status=ChargeStatus.CHARGED.value,
                    error_message="recovered: the images were on disk when the worker died",
                )
            )
        return True
