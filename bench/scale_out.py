"""Scale-out on PostgreSQL: jobs/s with 1, 2 and 4 ``imagerun run`` processes on one queue.

The sandbox runs in its own process (``imagerun sandbox --tiny``: zero latency, 64x64 images),
so what is measured is imagerun's own cost per job: claim, rate slot, ledger writes, decode,
verify and write of each image. Every measurement gets a fresh PostgreSQL database with N jobs
submitted (not timed); then W workers are started together, each with its own data directory
and ``--rpm`` far above what they can reach, and timed until the last one exits.

Reported per worker count (median of the runs): wall jobs/s (N / time from spawning the
workers to the last exit, start-up included) and steady jobs/s (requests/s the sandbox saw
between the 10th and 90th percentile of arrival times).

    python bench/scale_out.py [--jobs 4000] [--workers 1,2,4] [--runs 3] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from _support import (
    PYTHON,
    manifest,
    median,
    run_workers,
    sandbox_process,
    table,
    write_results,
)

ROUTE = "sandbox-laozhang"
ADMIN = os.environ.get("IMAGERUN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _db_url(name: str) -> str:
    base = ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{name}"


def _env(sandbox: str, db: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGERUN_")}
    env.update(
        {
            "IMAGERUN_DB": db,
            "IMAGERUN_ROUTE_SANDBOX_LAOZHANG_BASE_URL": f"{sandbox}/laozhang/v1",
            "SANDBOX_LAOZHANG_API_KEY": "sk-default-bench",
        }
    )
    return env


def _arrivals(sandbox: str, after: int) -> tuple[list[float], int, int]:
    """Arrival times (epoch s) of image requests after ``after``; their last seq; non-200s."""
    response = httpx.get(
        f"{sandbox}/_sandbox/requests", params={"kind": "image", "after": after}, timeout=60
    )
    response.raise_for_status()
    records = response.json()["data"]
    times = sorted(datetime.fromisoformat(r["time"]).timestamp() for r in records)
    last = max((r["seq"] for r in records), default=after)
    return times, last, sum(1 for r in records if r["status"] != 200)


def _steady(times: list[float]) -> float:
    low, high = len(times) // 10, len(times) * 9 // 10
    return (high - low) / (times[high] - times[low]) if times[high] > times[low] else 0.0


def measure(
    sandbox: str, jobs: int, workers: int, concurrency: int, seen: int
) -> tuple[dict[str, Any], int]:
    """One run of ``workers`` processes on a fresh database; returns its figures."""
    name = f"imagerun_bench_{secrets.token_hex(4)}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        with tempfile.TemporaryDirectory(prefix="scale-out-") as tmp:
            root = Path(tmp)
            env = _env(sandbox, _db_url(name))
            jobs_file = manifest(root / "jobs.jsonl", jobs)
            submit = [PYTHON, "-m", "runner.cli", "submit", str(jobs_file), "--route", ROUTE]
            subprocess.run(submit, env=env, cwd=root, check=True, capture_output=True)
            run = ["run", "--concurrency", str(concurrency), "--rpm", "1000000"]
            started = time.perf_counter()
            run_workers(workers, run, env, root)
            wall = time.perf_counter() - started
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    times, last, errors = _arrivals(sandbox, seen)
    if len(times) != jobs or errors:
        raise RuntimeError(f"expected {jobs} clean requests, saw {len(times)} ({errors} errors)")
    return {"wall_s": wall, "jobs_per_s": jobs / wall, "steady_jobs_per_s": _steady(times)}, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4000)
    parser.add_argument("--workers", default="1,2,4", help="Worker counts, comma-separated.")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8, help="Per worker process.")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]

    results: dict[int, list[dict[str, Any]]] = {w: [] for w in counts}
    with sandbox_process("--tiny", "--balance", "1000000") as sandbox:
        seen = 0
        for run in range(args.runs):
            for workers in counts:  # interleaved, so a noisy minute hurts every count alike
                figures, seen = measure(sandbox, args.jobs, workers, args.concurrency, seen)
                results[workers].append(figures)
                print(
                    f"run {run + 1}, {workers} worker(s): {figures['jobs_per_s']:.0f} jobs/s "
                    f"wall, {figures['steady_jobs_per_s']:.0f} steady",
                    flush=True,
                )

    rows, summary = [], []
    for workers, runs in results.items():
        wall = median([r["jobs_per_s"] for r in runs])
        steady = median([r["steady_jobs_per_s"] for r in runs])
        each = [r["jobs_per_s"] for r in runs]
        spread = f"{min(each):.0f}-{max(each):.0f}"
        rows.append([workers, len(runs), f"{wall:.0f}", spread, f"{steady:.0f}"])
        summary.append(
            {"workers": workers, "median_jobs_per_s": wall, "median_steady_jobs_per_s": steady}
        )
    print()
    print(table(rows, ["workers", "runs", "jobs/s (median)", "jobs/s range", "steady jobs/s"]))
    path = write_results(
        "scale_out",
        {
            "jobs": args.jobs,
            "concurrency_per_worker": args.concurrency,
            "database": "postgresql",
            "sandbox": "separate process, --tiny, zero latency",
            "summary": summary,
            "runs": {str(w): r for w, r in results.items()},
        },
    )
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
