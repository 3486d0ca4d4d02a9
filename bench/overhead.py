"""Overhead: imagerun against a bare ``httpx`` loop, same sandbox, same concurrency, same run.

N tiny-image jobs against a zero-latency sandbox in its own process. The baseline only sends,
decodes and writes each image (no database, no ledger, no retries) through an
``httpx.AsyncClient`` on the same transport imagerun uses (``--wire imagerun``, the default),
or on httpx's own (``--wire httpx``); imagerun does everything it always does. Reported:
jobs/s for both (imagerun's from its first to its last request as the sandbox saw them, and
end to end including start-up), the ratio, and the CPU each side spent per job (user +
system; imagerun's includes its start-up): on a busy machine throughput swings with the load,
CPU per job much less.

    python bench/overhead.py [--jobs 20000] [--concurrency 8] [--runs 3] [--wire imagerun|httpx]

Both sides write to the same scratch directory: tmpfs when the machine has one (see
``_support.scratch``), so that the file system's costs do not drown the code's.
"""

from __future__ import annotations

import argparse
import base64
import resource
import tempfile
import time
from pathlib import Path

import anyio
import httpx
from _support import (
    PYTHON,
    imagerun_env,
    manifest,
    median,
    sandbox_process,
    sandbox_requests,
    scratch,
    table,
    timed,
    write_results,
)

from runner.http.transport import Transport


def wire(name: str, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    if name == "httpx":
        return httpx.AsyncHTTPTransport(limits=limits)
    return Transport(httpx.create_ssl_context(), limits)


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


async def baseline(url: str, jobs: int, concurrency: int, out: Path, transport: str) -> float:
    """What a user would write: an AsyncClient, a fixed set of tasks, decode, write."""
    out.mkdir(parents=True, exist_ok=True)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": "Bearer sk-bench"}
    async with httpx.AsyncClient(
        base_url=f"{url}/openai/v1", headers=headers, transport=wire(transport, limits)
    ) as client:

        async def worker(first: int) -> None:
            for i in range(first, jobs, concurrency):
                body = {"model": "gpt-image-2", "prompt": f"baseline product render {i}"}
                response = await client.post("/images/generations", json=body)
                data = base64.b64decode(response.json()["data"][0]["b64_json"])
                (out / f"{i}.png").write_bytes(data)

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for k in range(concurrency):
                tg.start_soon(worker, k)
        return jobs / (time.perf_counter() - started)


def imagerun(url: str, jobs: int, concurrency: int, tmp: Path) -> tuple[float, float, float]:
    env = imagerun_env(tmp, {"IMAGERUN_ROUTE_SANDBOX_BASE_URL": f"{url}/openai/v1"})
    path = manifest(tmp / "jobs.jsonl", jobs)
    timed([PYTHON, "-m", "runner.cli", "submit", str(path), "--route", "sandbox"], env, tmp)
    before = len(sandbox_requests(url))
    run = [
        PYTHON,
        "-m",
        "runner.cli",
        "run",
        "--concurrency",
        str(concurrency),
        "--rpm",
        "100000000",
    ]
    cpu = cpu_seconds(resource.RUSAGE_CHILDREN)
    wall, _, output = timed(run, env, tmp)
    cpu = cpu_seconds(resource.RUSAGE_CHILDREN) - cpu
    seen = sandbox_requests(url)[before:]
    if len(seen) != jobs:
        raise RuntimeError(
            f"expected {jobs} requests, the sandbox saw {len(seen)}:\n{output[-1500:]}"
        )
    from datetime import datetime

    times = sorted(datetime.fromisoformat(r["time"]).timestamp() for r in seen)
    return jobs / (times[-1] - times[0]), jobs / wall, cpu / jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", help="scratch directory (default: tmpfs if available)")
    parser.add_argument(
        "--wire",
        choices=["imagerun", "httpx"],
        default="imagerun",
        help="the baseline's transport: imagerun's own (default) or httpx's",
    )
    args = parser.parse_args()
    root = scratch(args.dir)
    rows = []
    for run in range(args.runs):
        with sandbox_process("--tiny") as url, tempfile.TemporaryDirectory(dir=root) as tmp:
            cpu = cpu_seconds(resource.RUSAGE_SELF)
            base = anyio.run(
                baseline, url, args.jobs, args.concurrency, Path(tmp) / "baseline", args.wire
            )
            base_cpu = (cpu_seconds(resource.RUSAGE_SELF) - cpu) / args.jobs
            steady, whole, cpu_per_job = imagerun(url, args.jobs, args.concurrency, Path(tmp))
        rows.append(
            {
                "run": run + 1,
                "baseline": base,
                "imagerun": steady,
                "imagerun_end_to_end": whole,
                "baseline_cpu_us_per_job": base_cpu * 1e6,
                "imagerun_cpu_us_per_job": cpu_per_job * 1e6,
            }
        )
        print(
            f"run {run + 1}: baseline {base:.0f}/s ({base_cpu * 1e6:.0f} µs CPU a job), "
            f"imagerun {steady:.0f}/s, {whole:.0f}/s overall ({cpu_per_job * 1e6:.0f} µs)"
        )
    summary = {
        "baseline_jobs_per_s": median([r["baseline"] for r in rows]),
        "imagerun_jobs_per_s": median([r["imagerun"] for r in rows]),
        "imagerun_end_to_end_jobs_per_s": median([r["imagerun_end_to_end"] for r in rows]),
        "baseline_cpu_us_per_job": median([r["baseline_cpu_us_per_job"] for r in rows]),
        "imagerun_cpu_us_per_job": median([r["imagerun_cpu_us_per_job"] for r in rows]),
    }
    summary["ratio"] = summary["imagerun_jobs_per_s"] / summary["baseline_jobs_per_s"]
    print(
        table(
            [[k, f"{v:.2f}" if k == "ratio" else f"{v:.0f}"] for k, v in summary.items()],
            [
                "overhead (median)",
                f"N={args.jobs}, concurrency {args.concurrency}, baseline on {args.wire}",
            ],
        )
    )
    path = write_results(
        "overhead", {"args": vars(args), "scratch": root, "runs": rows, "summary": summary}
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
