"""How long a request waits for its ledger row on PostgreSQL, beside one bare INSERT.

Before a request leaves, its ``sending`` row must be committed (``LedgerWriter.start_attempt``).
On PostgreSQL that wait sits between a request's slot and its departure, so its spread is the
spread of the departures: four workers pacing one strict limiter are refused when one row
takes 15 ms and the next 3. This benchmark times that wait for lone starts (one every
``--every`` ms, each followed by its finish, as a paced route writes them), beside the floor:
one INSERT committed on its own by a bare asyncpg connection, at the same times, on the same
server. ``--hogs N`` keeps N processes spinning for the whole run, to see the tail a loaded
machine gives both.

    IMAGERUN_TEST_PG=postgresql://postgres@127.0.0.1:5433/postgres \\
        python bench/pg_start_write.py --starts 400 --hogs 2
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import secrets
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import anyio
import asyncpg

from bench._support import machine, table, write_results
from runner.models import ChargeEvidence, ChargeStatus, JobSpec, Outcome, utcnow
from runner.store import AttemptResult, AttemptStart, Store

ADMIN = os.environ.get("IMAGERUN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _spin() -> None:
    while True:
        pass


@contextmanager
def hogs(n: int) -> Iterator[None]:
    procs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(n)]
    for proc in procs:
        proc.start()
    try:
        yield
    finally:
        for proc in procs:
            proc.terminate()
            proc.join()


def _start(job: Any) -> AttemptStart:
    return AttemptStart(
        id=f"req_{secrets.token_hex(8)}",
        job_id=job.id,
        batch_id=job.batch_id,
        worker_id="w1",
        route=job.route,
        provider="sandbox",
        shape="images",
        endpoint="/v1/images/generations",
        model="gpt-image-1",
        billing_unit="tokens",
        params={"prompt": job.prompt, **job.params},
        worst_case_usd=0.25,
        started_at=utcnow(),
    )


def _result(start: AttemptStart) -> AttemptResult:
    return AttemptResult(
        id=start.id,
        job_id=start.job_id,
        outcome=Outcome.OK,
        finished_at=start.started_at + timedelta(milliseconds=5),
        latency_ms=5.0,
        expected_usd=0.011,
        charge_status=ChargeStatus.CHARGED,
        charge_evidence=ChargeEvidence.POLICY,
    )


async def imagerun_waits(url: str, starts: int, every: float) -> list[float]:
    store = await Store.open(url)
    try:
        specs = [
            JobSpec(
                key=f"j{i}", ext_id=f"j{i}", line=i, prompt=f"p{i}", params={"size": "1024x1024"}
            )
            for i in range(starts)
        ]
        batch = (
            await store.submit(
                name="w",
                route="sandbox",
                manifest="/m.jsonl",
                manifest_sha256="0" * 64,
                route_snapshot={"name": "sandbox"},
                budget_usd=None,
                specs=specs,
                exact=False,
            )
        ).batch
        jobs = await store.claim(
            worker_id="w1", batch_ids=[batch.id], limit=starts, lease_seconds=600
        )
        ledger = store.group_ledger()
        waits = []
        async with anyio.create_task_group() as tg:
            await tg.start(ledger.run)
            for job in jobs:
                start = _start(job)
                began = time.perf_counter()
                await ledger.start_attempt(start)
                waits.append(time.perf_counter() - began)
                await ledger.complete(_result(start), [])
                await anyio.sleep(every)
            await ledger.flush()
            tg.cancel_scope.cancel()
        return waits
    finally:
        await store.close()


async def floor_waits(dsn: str, starts: int, every: float) -> list[float]:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE floor (id text PRIMARY KEY, at timestamptz)")
        waits = []
        for _ in range(starts):
            began = time.perf_counter()
            await conn.execute("INSERT INTO floor VALUES ($1, now())", secrets.token_hex(8))
            waits.append(time.perf_counter() - began)
            await asyncio.sleep(every)
        return waits
    finally:
        await conn.close()


def summary(waits: list[float]) -> dict[str, float]:
    ms = sorted(w * 1000 for w in waits)
    q = statistics.quantiles(ms, n=100)
    return {"median": q[49], "p95": q[94], "p99": q[98], "max": ms[-1]}


async def measure(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    name = f"imagerun_start_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = f"{ADMIN.rsplit('/', 1)[0]}/{name}"
    url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        every = args.every / 1000
        # Side by side: both write at the same moments, so both see the same load.
        ours, floor = await asyncio.gather(
            imagerun_waits(url, args.starts, every), floor_waits(dsn, args.starts, every)
        )
        return {"imagerun start row": summary(ours), "bare INSERT": summary(floor)}
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--starts", type=int, default=400)
    parser.add_argument("--every", type=float, default=20.0, help="ms between starts")
    parser.add_argument("--hogs", type=int, default=0, help="processes spinning meanwhile")
    args = parser.parse_args()
    with hogs(args.hogs):
        results = asyncio.run(measure(args))
    rows = [
        [what, *(f"{v:.2f}" for v in (s["median"], s["p95"], s["p99"], s["max"]))]
        for what, s in results.items()
    ]
    print(table(rows, ["write", "median ms", "p95 ms", "p99 ms", "max ms"]))
    data = {"machine": machine(), "args": vars(args), "results": results}
    print(f"wrote {write_results('pg_start_write', data)}")


if __name__ == "__main__":
    main()
