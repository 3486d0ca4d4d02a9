"""Rate-limit efficiency: imagerun against a naive ``asyncio.gather`` + semaphore script.

The sandbox enforces R requests/min (over short windows, as providers do) with realistic
latency. imagerun is configured at R; the naive script uses the official ``openai`` SDK with
its default retries and a semaphore sized to keep R busy. Reported: achieved rate ÷ R over the
run, 429s the provider sent, and jobs that ended without an image.

    python bench/rate_limit.py [--rpm 600] [--jobs 300] [--latency 2] [--jitter 1]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from _support import (
    PYTHON,
    imagerun_env,
    manifest,
    sandbox_process,
    sandbox_requests,
    table,
    timed,
    write_results,
)


def measure(requests: list[dict[str, Any]], rpm: int, jobs: int) -> dict[str, float]:
    times = sorted(datetime.fromisoformat(r["time"]).timestamp() for r in requests)
    ok = [r for r in requests if r["status"] == 200]
    span = max(times) - min(times)
    # Successful requests per minute over the run, as a fraction of R: `ok` requests are
    # (ok - 1) intervals apart, so a perfect client at R scores 1.0.
    achieved = (len(ok) - 1) / span * 60 if span and ok else 0.0
    return {
        "requests": len(requests),
        "ok": len(ok),
        "429s": sum(1 for r in requests if r["status"] == 429),
        "seconds": span,
        "efficiency": achieved / rpm,
    }


async def naive(url: str, jobs: int, concurrency: int) -> int:
    """The script people write: gather everything behind a semaphore, SDK retries by default."""
    import openai

    client = openai.AsyncOpenAI(api_key="sk-bench", base_url=f"{url}/openai/v1")
    gate = asyncio.Semaphore(concurrency)
    failures = 0

    async def one(i: int) -> None:
        nonlocal failures
        async with gate:
            try:
                await client.images.generate(model="gpt-image-2", prompt=f"naive render {i}")
            except openai.APIError:
                failures += 1

    await asyncio.gather(*(one(i) for i in range(jobs)))
    await client.close()
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rpm", type=int, default=600)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--latency", type=float, default=2.0)
    parser.add_argument("--jitter", type=float, default=1.0)
    args = parser.parse_args()
    # Enough requests in flight to keep R/min busy at the slowest latency, with room to spare.
    concurrency = int(args.rpm / 60 * (args.latency + args.jitter) * 1.5) + 1
    options = ["--tiny", "--rpm", str(args.rpm), "--latency", str(args.latency)]
    options += ["--jitter", str(args.jitter)]
    results: dict[str, dict[str, float]] = {}
    with sandbox_process(*options) as url, tempfile.TemporaryDirectory() as tmp:
        env = imagerun_env(Path(tmp), {"IMAGERUN_ROUTE_SANDBOX_BASE_URL": f"{url}/openai/v1"})
        path = manifest(Path(tmp) / "jobs.jsonl", args.jobs)
        timed(
            [PYTHON, "-m", "runner.cli", "submit", str(path), "--route", "sandbox"], env, Path(tmp)
        )
        run = [PYTHON, "-m", "runner.cli", "run", "--concurrency", str(concurrency)]
        timed([*run, "--rpm", str(args.rpm)], env, Path(tmp))
        results["imagerun"] = measure(sandbox_requests(url), args.rpm, args.jobs)
    with sandbox_process(*options) as url:
        failed = asyncio.run(naive(url, args.jobs, concurrency))
        results["naive openai SDK"] = measure(sandbox_requests(url), args.rpm, args.jobs)
        results["naive openai SDK"]["jobs_failed"] = failed
    results["imagerun"]["jobs_failed"] = args.jobs - results["imagerun"]["ok"]
    rows = [
        [name, f"{r['efficiency']:.3f}", int(r["429s"]), int(r["requests"]), int(r["jobs_failed"])]
        for name, r in results.items()
    ]
    print(table(rows, ["client", f"images/min ÷ R (R={args.rpm})", "429s", "requests", "failed"]))
    print(f"wrote {write_results('rate_limit', {'args': vars(args), 'results': results})}")


if __name__ == "__main__":
    main()
