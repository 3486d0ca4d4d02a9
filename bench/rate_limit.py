"""Rate-limit efficiency: imagerun beside a naive ``asyncio.gather`` + semaphore script.

The sandbox enforces R requests/min with realistic latency, in each limiter shape (``strict``:
one request per 60/R s; ``window``: R/60 per fixed second; ``bucket``: a token bucket of a
second's worth; ``sliding``: R/6 in any 10 s). imagerun is run told the true rate (``--rpm R``),
told three times too much (``--rpm 3R``) and not told (the route's built-in rate, 2R on the
sandbox route, as the ceiling), each with and without ``x-ratelimit-*`` headers. The naive
script uses the official ``openai`` SDK with its default retries and a semaphore sized to keep
R busy. Reported per cell: successful requests per minute ÷ R over the run, 429s, requests
sent, share refused, and jobs that ended without an image.

    python bench/rate_limit.py [--rpm 300] [--jobs 150] [--latency 1] [--jitter 0.5]
        [--shape strict --shape window ...] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from dataclasses import dataclass
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

SHAPES = ("strict", "window", "bucket", "sliding")
#: Seconds each shape measures over (``window`` and ``sliding`` only).
WINDOWS = {"window": 1.0, "sliding": 10.0}


@dataclass(frozen=True, slots=True, kw_only=True)
class Cell:
    """One run: a client against one limiter shape."""

    shape: str
    client: str
    #: ``truth``, ``3x`` or ``untold`` (imagerun); ``-`` for the naive script.
    told: str
    headers: bool


def measure(requests: list[dict[str, Any]], rpm: int, jobs: int) -> dict[str, float]:
    times = sorted(datetime.fromisoformat(r["time"]).timestamp() for r in requests)
    ok = [r for r in requests if r["status"] == 200]
    span = max(times) - min(times) if times else 0.0
    # Successful requests per minute over the run, as a fraction of R: `ok` requests are
    # (ok - 1) intervals apart, so a perfect client at R scores 1.0.
    achieved = (len(ok) - 1) / span * 60 if span and ok else 0.0
    refused = sum(1 for r in requests if r["status"] == 429)
    return {
        "requests": len(requests),
        "ok": len(ok),
        "429s": refused,
        "refused": refused / len(requests) if requests else 0.0,
        "seconds": span,
        "efficiency": achieved / rpm,
        "jobs_failed": jobs - len(ok),
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


def sandbox_options(args: argparse.Namespace, cell: Cell) -> list[str]:
    options = ["--tiny", "--rpm", str(args.rpm), "--latency", str(args.latency)]
    options += ["--jitter", str(args.jitter), "--limiter", cell.shape]
    if cell.shape in WINDOWS:
        options += ["--limiter-window", str(WINDOWS[cell.shape])]
    return options if cell.headers else [*options, "--no-limit-headers"]


def run_imagerun(args: argparse.Namespace, cell: Cell, url: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = imagerun_env(Path(tmp), {"IMAGERUN_ROUTE_SANDBOX_BASE_URL": f"{url}/openai/v1"})
        path = manifest(Path(tmp) / "jobs.jsonl", args.jobs)
        submit = [PYTHON, "-m", "runner.cli", "submit", str(path), "--route", "sandbox"]
        timed(submit, env, Path(tmp))
        run = [PYTHON, "-m", "runner.cli", "run", "--concurrency", str(args.concurrency)]
        told = {"truth": args.rpm, "3x": 3 * args.rpm}.get(cell.told)
        timed([*run, "--rpm", str(told)] if told else run, env, Path(tmp))


def run_cell(args: argparse.Namespace, cell: Cell) -> dict[str, float]:
    with sandbox_process(*sandbox_options(args, cell)) as url:
        if cell.client == "imagerun":
            run_imagerun(args, cell, url)
        else:
            # Enough requests in flight to keep R/min busy at the slowest latency, and more.
            concurrency = int(args.rpm / 60 * (args.latency + args.jitter) * 1.5) + 1
            asyncio.run(naive(url, args.jobs, concurrency))
        return measure(sandbox_requests(url), args.rpm, args.jobs)


def cells(shapes: list[str]) -> list[Cell]:
    out: list[Cell] = []
    for shape in shapes:
        out.append(Cell(shape=shape, client="imagerun", told="truth", headers=True))
        for told in ("3x", "untold"):
            for headers in (True, False):
                out.append(Cell(shape=shape, client="imagerun", told=told, headers=headers))
        out.append(Cell(shape=shape, client="naive openai SDK", told="-", headers=True))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rpm", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=150)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--jitter", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--shape", action="append", choices=SHAPES, dest="shapes")
    args = parser.parse_args()
    shapes = args.shapes or list(SHAPES)
    results: list[dict[str, Any]] = []
    for cell in cells(shapes):
        measured = run_cell(args, cell)
        results.append(
            {
                "shape": cell.shape,
                "client": cell.client,
                "told": cell.told,
                "headers": cell.headers,
                **measured,
            }
        )
        print(f"{cell}: {measured}", flush=True)
    rows = [
        [
            r["shape"],
            r["client"],
            r["told"],
            "yes" if r["headers"] else "no",
            f"{r['efficiency']:.3f}",
            int(r["429s"]),
            int(r["requests"]),
            f"{100 * r['refused']:.1f}%",
            int(r["jobs_failed"]),
        ]
        for r in results
    ]
    header = [
        "limiter",
        "client",
        "told",
        "headers",
        f"ok/min ÷ R (R={args.rpm})",
        "429s",
        "requests",
        "refused",
        "jobs failed",
    ]
    print(table(rows, header))
    name = "rate_limit" if len(shapes) == len(SHAPES) else f"rate_limit_{'_'.join(shapes)}"
    print(f"wrote {write_results(name, {'args': vars(args), 'results': results})}")


if __name__ == "__main__":
    main()
