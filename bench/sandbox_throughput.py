"""Sandbox throughput: zero-latency tiny mode, served by a separate process, under async load.

Usage::

    python bench/sandbox_throughput.py [--concurrency 64] [--seconds 5] [--profile openai]

Starts ``runner.sandbox.serve`` (tiny mode, no latency, no limits) in a child process, drives
it with one ``httpx.AsyncClient`` at the given concurrency for the given time, and prints
requests/s with latency percentiles. It also measures, in this process, what a tiny image
costs to draw inline versus through a worker thread (why tiny mode draws inline).
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing
import socket
import statistics
import time
from types import ModuleType

import anyio

from runner.sandbox import SandboxConfig, serve
from runner.sandbox.render import RenderSpec, render_generation

KEYS = {"openai": "sk-sandbox-openai", "laozhang": "sk-default-sandbox"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(port: int) -> None:
    serve(SandboxConfig(tiny=True), port=port)


def _client_module(name: str) -> ModuleType:
    # httpx 0.28's connection pool degrades badly with many connections (64 concurrent
    # requests to a trivial uvicorn app: ~130 req/s vs ~950 at 8), so by default the load
    # comes from httpx2 (same API; installed with the openai SDK), which does not.
    return importlib.import_module(name)


async def _wait_ready(httpx: ModuleType, url: str, timeout: float = 15.0) -> None:
    with anyio.fail_after(timeout):
        async with httpx.AsyncClient() as client:
            while True:
                try:
                    if (await client.get(f"{url}/_sandbox/state")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await anyio.sleep(0.05)


async def _load(
    httpx: ModuleType, url: str, profile: str, concurrency: int, seconds: float
) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {KEYS[profile]}"}
    deadline = anyio.current_time() + seconds
    async with httpx.AsyncClient(
        base_url=f"{url}/{profile}/v1", limits=limits, timeout=30
    ) as client:

        async def worker(index: int) -> None:
            nonlocal errors
            n = 0
            while anyio.current_time() < deadline:
                n += 1
                body = {"model": "gpt-image-2", "prompt": f"worker {index} image {n}"}
                started = time.perf_counter()
                response = await client.post("/images/generations", json=body, headers=headers)
                latencies.append(time.perf_counter() - started)
                errors += response.status_code != 200

        async with anyio.create_task_group() as group:
            for index in range(concurrency):
                group.start_soon(worker, index)
    return latencies, errors


async def _render_costs(samples: int = 500) -> tuple[float, float]:
    def draw(i: int) -> bytes:
        return render_generation(RenderSpec(prompt=f"cost {i}", width=64, height=64))

    draw(-1)  # load the font once
    started = time.perf_counter()
    for i in range(samples):
        draw(i)
    inline = (time.perf_counter() - started) / samples
    render_generation.cache_clear()
    started = time.perf_counter()
    for i in range(samples):
        await anyio.to_thread.run_sync(draw, i)
    threaded = (time.perf_counter() - started) / samples
    return inline, threaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--profile", choices=sorted(KEYS), default="openai")
    parser.add_argument("--client", choices=["httpx2", "httpx"], default="httpx2")
    args = parser.parse_args()
    httpx = _client_module(args.client)

    inline, threaded = anyio.run(_render_costs)
    print(f"tiny draw: inline {inline * 1e3:.3f} ms, via worker thread {threaded * 1e3:.3f} ms")

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    process = multiprocessing.get_context("spawn").Process(target=_serve, args=(port,), daemon=True)
    process.start()
    try:
        anyio.run(_wait_ready, httpx, url)
        latencies, errors = anyio.run(
            _load, httpx, url, args.profile, args.concurrency, args.seconds
        )
    finally:
        process.terminate()
        process.join(timeout=10)
    count = len(latencies)
    quantiles = statistics.quantiles(latencies, n=100)
    print(
        f"{args.profile} ({args.client}): {count} requests in {args.seconds:.1f} s at concurrency "
        f"{args.concurrency}: {count / args.seconds:.0f} req/s, {errors} non-200; "
        f"latency p50 {quantiles[49] * 1e3:.1f} ms, p99 {quantiles[98] * 1e3:.1f} ms"
    )


if __name__ == "__main__":
    main()
