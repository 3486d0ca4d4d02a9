"""Shared pieces of the benchmarks: a sandbox in its own process, timed child commands, output.

Benchmarks are measurements, not tests: each prints a table and writes JSON under
``bench/results/``. Run them from the repository root with the project's Python.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

RESULTS = Path(__file__).resolve().parent / "results"
PYTHON = sys.executable
#: The process id behind each URL :func:`sandbox_process` is serving (to read its memory).
SANDBOX_PIDS: dict[str, int] = {}


def machine() -> dict[str, Any]:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_at_start": load,
    }


def scratch(where: str | None) -> str | None:
    """Where a benchmark keeps its database and outputs: ``where``, else tmpfs if there is one.

    On ext4, creating files soon after many were deleted (the previous run's outputs) scans
    past every recently freed inode: file creation then dominates the measurement, and punishes
    whichever side runs first. tmpfs keeps the figures about the code under test; pass
    ``--dir`` to measure a disk instead.
    """
    if where:
        return where
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def sandbox_process(*options: str) -> Iterator[str]:
    """``imagerun sandbox`` in a child process; yields its base URL (``http://127.0.0.1:P``)."""
    port = free_port()
    proc = subprocess.Popen(
        [PYTHON, "-m", "runner.cli", "sandbox", "--port", str(port), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    SANDBOX_PIDS[url] = proc.pid
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/_sandbox/state", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the sandbox did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        SANDBOX_PIDS.pop(url, None)
        proc.terminate()
        proc.wait(timeout=10)


def sandbox_requests(url: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/_sandbox/requests", params={"kind": "image"}, timeout=60)
    response.raise_for_status()
    body = response.json()
    return list(body["data"] if isinstance(body, dict) else body)


def timed(cmd: Sequence[str], env: dict[str, str], cwd: Path) -> tuple[float, int, str]:
    """Run ``cmd``; return wall seconds, peak RSS in MiB (GNU time), and its output."""
    wrapped = ["/usr/bin/time", "-f", "__RSS_KB__ %M", *cmd]
    started = time.perf_counter()
    done = subprocess.run(wrapped, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise RuntimeError(f"{cmd[:4]} failed ({done.returncode}): {done.stderr[-2000:]}")
    rss_kb = 0
    for line in done.stderr.splitlines():
        if line.startswith("__RSS_KB__"):
            rss_kb = int(line.split()[1])
    return wall, rss_kb // 1024, done.stdout + done.stderr


def run_workers(
    workers: int,
    run: Sequence[str],
    env: dict[str, str],
    root: Path,
    *,
    ok: tuple[int, ...] = (0,),
    timeout: float = 1800,
) -> None:
    """``imagerun RUN…`` in ``workers`` processes at once (each with its own data directory),
    waited for; raises if one exits with a code not in ``ok``."""
    procs = [
        subprocess.Popen(
            [PYTHON, "-m", "runner.cli", "--data", str(root / f"data-{i}"), *run],
            env=env,
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i in range(workers)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=timeout)
        if proc.returncode not in ok:
            raise RuntimeError(f"a worker exited {proc.returncode}: {err[-2000:]!r}")


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2, default=str) + "\n")
    return path


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [list(map(str, header)), *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def manifest(path: Path, jobs: int, extra: str = "") -> Path:
    with path.open("w") as handle:
        for i in range(jobs):
            handle.write(f'{{"prompt": "bench product render {i}"{extra}}}\n')
    return path


def imagerun_env(tmp: Path, route_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGERUN_")}
    env.update(
        {
            "IMAGERUN_DB": f"sqlite+aiosqlite:///{tmp / 'imagerun.db'}",
            "IMAGERUN_DATA": str(tmp / "data"),
            **route_env,
        }
    )
    return env
