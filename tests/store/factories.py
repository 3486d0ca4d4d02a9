"""Builders and probes shared by the store tests.

The probes read the store's tables directly: that is how a test checks what the ledger holds
beyond what the verbs return. Production code never does this.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Row

from runner.models import ChargeEvidence, ChargeStatus, Job, JobSpec, Outcome, utcnow
from runner.store import AttemptResult, AttemptStart, EnqueueResult, OutputRecord, Store
from runner.store.tables import attempts, jobs

ROUTE = "sandbox-images"
LEASE = 600.0
#: A lease that ran out a second before it was granted: the holder is as good as dead.
LAPSED = -1.0


def specs(n: int, *, prefix: str = "job") -> list[JobSpec]:
    return [
        JobSpec(
            key=f"{prefix}-{i:05d}",
            ext_id=f"{prefix}-{i}",
            line=i,
            prompt=f"a lighthouse at dusk, study {i}",
            params={"size": "1024x1024", "quality": "low"},
            metadata={"n": i},
        )
        for i in range(1, n + 1)
    ]


async def submit(
    store: Store,
    name: str,
    job_specs: Sequence[JobSpec],
    *,
    route: str = ROUTE,
    budget_usd: float | None = None,
    exact: bool = False,
) -> EnqueueResult:
    return await store.submit(
        name=name,
        route=route,
        manifest=f"/jobs/{name}.jsonl",
        manifest_sha256="0" * 64,
        route_snapshot={"name": route, "model": "gpt-image-1"},
        budget_usd=budget_usd,
        specs=job_specs,
        exact=exact,
    )


async def claim_all(store: Store, batch_id: str, worker: str, *, lease: float = LEASE) -> list[Job]:
    return await store.claim(
        worker_id=worker, batch_ids=[batch_id], limit=10_000, lease_seconds=lease
    )


def start_of(job: Job, worker: str, *, worst_case_usd: float = 0.25) -> AttemptStart:
    return AttemptStart(
        id=f"req_{secrets.token_hex(8)}",
        job_id=job.id,
        batch_id=job.batch_id,
        worker_id=worker,
        route=job.route,
        provider="sandbox",
        shape="images",
        endpoint="/v1/images/generations",
        model="gpt-image-1",
        billing_unit="tokens",
        params={"prompt": job.prompt, **job.params},
        worst_case_usd=worst_case_usd,
        started_at=utcnow(),
    )


def result_of(
    start: AttemptStart,
    outcome: Outcome,
    *,
    expected_usd: float | None = None,
    charge: ChargeStatus = ChargeStatus.UNKNOWN,
    **fields: Any,
) -> AttemptResult:
    return AttemptResult(
        id=start.id,
        job_id=start.job_id,
        outcome=outcome,
        finished_at=start.started_at + timedelta(milliseconds=850),
        latency_ms=850.0,
        expected_usd=expected_usd,
        charge_status=charge,
        charge_evidence=ChargeEvidence.POLICY,
        **fields,
    )


def output_of(start: AttemptStart, k: int, *, created_at: datetime | None = None) -> OutputRecord:
    return OutputRecord(
        job_id=start.job_id,
        batch_id=start.batch_id,
        attempt_id=start.id,
        k=k,
        path=f"out/{start.job_id}-{k}.png",
        sha256=f"{k:064x}",
        width=1024,
        height=1024,
        format="png",
        bytes=123_456,
        worker_id=start.worker_id,
        created_at=created_at or utcnow(),
    )


async def job_row(store: Store, job_id: int) -> Row[Any]:
    async with store.db.reading() as conn:
        return (await conn.execute(select(jobs).where(jobs.c.id == job_id))).one()


async def attempt_rows(store: Store, job_id: int) -> list[Row[Any]]:
    async with store.db.reading() as conn:
        query = select(attempts).where(attempts.c.job_id == job_id).order_by(attempts.c.number)
        return list((await conn.execute(query)).all())
