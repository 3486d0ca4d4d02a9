"""Queue at scale: submit, start-up and status with a million jobs queued (SQLite).

A generation-only manifest of N short prompts (default 1,000,000; one line in 1,000 also sets
size and quality) on route ``sandbox``. Measured, each in a fresh child process:

- ``imagerun check`` and ``imagerun submit``: wall time and peak RSS (GNU time);
- start-up: wall clock from just before ``imagerun run`` is spawned to the first request the
  sandbox logs (its ``time``), with every job still queued; the run is then let go for a few
  seconds and stopped with SIGINT (graceful). Repeated ``--starts`` times;
- ``imagerun status``: wall time of the command, and of ``Store.batch_status`` alone.

Plus where start-up goes: ``-X importtime`` of ``runner.cli``, and a timeline of one start-up
run in this process (``app.run`` with every store verb, ``adopt_orphans`` and
``sweep_temporaries`` timed, until the first request leaves), with the query plan of every
statement that took over 20 ms.

    python bench/queue_scale.py [--jobs 1000000] [--runs 2] [--starts 3] [--reuse-db FILE]
"""

from __future__ import annotations

import argparse
import functools
import inspect
import os
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
from _support import PYTHON, imagerun_env, median, sandbox_process, table, timed, write_results
from sqlalchemy import Engine, event

import runner.run.worker
from runner import app
from runner.config import load_settings
from runner.http.client import ApiClient
from runner.run.worker import RunOptions
from runner.store import Store

CLI = [PYTHON, "-m", "runner.cli"]
#: A statement slower than this during start-up gets its query plan reported.
SLOW_STATEMENT = 0.02


def run_timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int, float, str]:
    """:func:`timed` plus the CPU seconds (user + system) the command used: on a loaded
    machine wall time alone says little."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, rss_mb, output = timed(cmd, env, cwd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, rss_mb, cpu, output


def write_manifest(path: Path, jobs: int) -> Path:
    """Short prompts; one line in 1,000 sets size and quality (validated against the model)."""
    with path.open("w") as handle:
        for i in range(jobs):
            extra = ', "size": "1024x1024", "quality": "low"' if i % 1000 == 0 else ""
            handle.write(f'{{"prompt": "bench product render {i}"{extra}}}\n')
    return path


def enqueue(tmp: Path, env: dict[str, str], jobs: int, reuse: Path | None) -> dict[str, Any]:
    """``check`` then ``submit`` (or a copy of ``reuse``, a database submitted before)."""
    path = write_manifest(tmp / "jobs.jsonl", jobs)
    check = [*CLI, "check", str(path), "--route", "sandbox"]
    check_s, check_mb, check_cpu, output = run_timed(check, env, tmp)
    if f"{jobs} job(s)" not in output:
        raise RuntimeError(f"check did not accept the manifest:\n{output[-1500:]}")
    if reuse is not None:
        shutil.copy(reuse, tmp / "imagerun.db")
        return {
            "check_s": check_s,
            "check_cpu_s": check_cpu,
            "check_rss_mb": check_mb,
            "submit": f"reused {reuse}",
        }
    submit = [*CLI, "submit", str(path), "--route", "sandbox"]
    submit_s, submit_mb, submit_cpu, output = run_timed(submit, env, tmp)
    if f"{jobs} job(s) enqueued" not in output:
        raise RuntimeError(f"submit failed:\n{output[-1500:]}")
    return {
        "check_s": check_s,
        "check_cpu_s": check_cpu,
        "check_rss_mb": check_mb,
        "submit_s": submit_s,
        "submit_cpu_s": submit_cpu,
        "submit_rss_mb": submit_mb,
    }


def first_request(url: str, env: dict[str, str], tmp: Path, run_seconds: float) -> dict[str, Any]:
    """Seconds from spawning ``imagerun run`` to the first request the sandbox logs."""
    log = f"{url}/_sandbox/requests"
    seen = httpx.get(log, params={"kind": "image"}, timeout=30).json()["data"]
    after = max((r["seq"] for r in seen), default=0)
    cmd = [*CLI, "run", "--concurrency", "8", "--rpm", "100000000", "--grace", "10"]
    with (tmp / "run.log").open("w") as out:
        spawned = time.time()
        proc = subprocess.Popen(cmd, env=env, cwd=tmp, stdout=out, stderr=subprocess.STDOUT)
        try:
            first = None
            while first is None:
                if proc.poll() is not None or time.time() - spawned > 120:
                    raise RuntimeError(f"no request seen:\n{(tmp / 'run.log').read_text()[-1500:]}")
                data = httpx.get(log, params={"kind": "image", "after": after}, timeout=30)
                records = data.json()["data"]
                if records:
                    first = min(datetime.fromisoformat(r["time"]).timestamp() for r in records)
                else:
                    time.sleep(0.01)
            time.sleep(run_seconds)
            proc.send_signal(signal.SIGINT)
            stopped = time.time()
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    sent = httpx.get(log, params={"kind": "image", "after": after}, timeout=60).json()["data"]
    times = sorted(datetime.fromisoformat(r["time"]).timestamp() for r in sent)
    return {
        "first_request_s": first - spawned,
        "requests": len(sent),
        # Claims are a write each: a slow claim query shows up here as a low request rate.
        "requests_per_s": (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0,
        "stop_s": time.time() - stopped,
        "exit_code": code,
    }


def status(env: dict[str, str], tmp: Path, repeats: int = 3) -> dict[str, Any]:
    """``imagerun status`` wall time (median) and the ``batch_status`` query alone (best)."""
    walls, cpus, rss = [], [], 0
    for _ in range(repeats):
        wall, rss, cpu, output = run_timed([*CLI, "status"], env, tmp)
        if "Batches" not in output:
            raise RuntimeError(f"status failed:\n{output[-1500:]}")
        walls.append(wall)
        cpus.append(cpu)

    async def query() -> list[float]:
        store = await Store.open(env["IMAGERUN_DB"])
        try:
            batches = await store.list_batches()
            spent = []
            for _ in range(repeats):
                started = time.perf_counter()
                await store.batch_status(batches)
                spent.append(time.perf_counter() - started)
            return spent
        finally:
            await store.close()

    return {
        "status_s": median(walls),
        "status_cpu_s": median(cpus),
        "status_rss_mb": rss,
        "batch_status_query_s": min(anyio.run(query)),
    }


def import_profile(env: dict[str, str], tmp: Path, top: int = 6) -> dict[str, Any]:
    """``python -X importtime -c 'import runner.cli'``: total, and self time by top package."""
    done = subprocess.run(
        [PYTHON, "-X", "importtime", "-c", "import runner.cli"],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
        check=True,
    )
    by_package: dict[str, float] = {}
    total = 0.0
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if match:
            package = match.group(4).split(".")[0]
            by_package[package] = by_package.get(package, 0.0) + int(match.group(1)) / 1e6
            if len(match.group(3)) == 1:
                total += int(match.group(2)) / 1e6
    heaviest = sorted(by_package.items(), key=lambda kv: -kv[1])[:top]
    return {"total_s": round(total, 3), "self_s_by_package": {k: round(v, 3) for k, v in heaviest}}


class Timeline:
    """Times store verbs, named start-up steps and SQL statements until the first request."""

    def __init__(self) -> None:
        self.origin = time.perf_counter()
        self.steps: list[tuple[str, float, float]] = []
        self.statements: list[tuple[float, str, Any]] = []
        self.first_send: float | None = None
        self.sent = anyio.Event()

    def now(self) -> float:
        return time.perf_counter() - self.origin

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                started = self.now()
                try:
                    return await fn(*args, **kwargs)
                finally:
                    if self.first_send is None:
                        self.steps.append((name, started, self.now() - started))

            return timed_async

        @functools.wraps(fn)
        def timed_sync(*args: Any, **kwargs: Any) -> Any:
            started = self.now()
            try:
                return fn(*args, **kwargs)
            finally:
                if self.first_send is None:
                    self.steps.append((name, started, self.now() - started))

        return timed_sync

    @contextmanager
    def installed(self) -> Iterator[None]:
        missing = object()
        patched: list[tuple[Any, str, Any]] = []

        def patch(owner: Any, attr: str, value: Any) -> None:
            patched.append((owner, attr, vars(owner).get(attr, missing)))
            setattr(owner, attr, value)

        for attr, fn in inspect.getmembers(Store, inspect.iscoroutinefunction):
            if not attr.startswith("_") and attr not in ("open", "close"):
                patch(Store, attr, self.wrap(f"store.{attr}", fn))
        patch(Store, "open", classmethod(self.wrap("store.open", vars(Store)["open"].__func__)))
        for attr in ("adopt_orphans", "sweep_temporaries"):
            patch(runner.run.worker, attr, self.wrap(attr, getattr(runner.run.worker, attr)))
        send = ApiClient.send

        async def first_send(client: ApiClient, *args: Any, **kwargs: Any) -> Any:
            if self.first_send is None:
                self.first_send = self.now()
                self.sent.set()
            return await send(client, *args, **kwargs)

        patch(ApiClient, "send", first_send)
        starts: dict[Any, float] = {}

        def before(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
            starts[cursor] = time.perf_counter()

        def after(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
            spent = time.perf_counter() - starts.pop(cursor, time.perf_counter())
            if self.first_send is None:
                self.statements.append((spent, statement, params))

        event.listen(Engine, "before_cursor_execute", before)
        event.listen(Engine, "after_cursor_execute", after)
        try:
            yield
        finally:
            event.remove(Engine, "before_cursor_execute", before)
            event.remove(Engine, "after_cursor_execute", after)
            for owner, attr, value in reversed(patched):
                if value is missing:
                    delattr(owner, attr)
                else:
                    setattr(owner, attr, value)


def startup_timeline(env: dict[str, str], db_file: Path) -> dict[str, Any]:
    """One ``app.run`` in this process, timed step by step until its first request leaves."""
    timeline = Timeline()
    settings = timeline.wrap("load_settings", load_settings)(environ=env)

    async def go() -> None:
        async with anyio.create_task_group() as tg:
            holder: list[runner.run.worker.Runner] = []

            async def stop_after_first() -> None:
                await timeline.sent.wait()
                while not holder:
                    await anyio.sleep(0.01)
                holder[0].request_stop()

            tg.start_soon(stop_after_first)
            options = RunOptions(concurrency=8, rpm=100_000_000, handle_signals=False)
            await app.run(settings, [], options, on_start=holder.append)

    with timeline.installed():
        anyio.run(go)
    slow = sorted(timeline.statements, key=lambda s: -s[0])
    plans = []
    with sqlite3.connect(db_file) as db:
        for spent, statement, params in slow:
            if spent < SLOW_STATEMENT:
                break
            if isinstance(params, list):  # executemany
                continue
            plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {statement}", params)]
            plans.append({"s": round(spent, 3), "sql": " ".join(statement.split()), "plan": plan})
    return {
        "first_request_s": timeline.first_send,
        "steps": [[n, round(at, 3), round(s, 3)] for n, at, s in timeline.steps],
        "slow_statements": plans,
    }


def one_run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    with sandbox_process("--tiny") as url:
        env = imagerun_env(tmp, {"IMAGERUN_ROUTE_SANDBOX_BASE_URL": f"{url}/openai/v1"})
        result: dict[str, Any] = {"load_before": os.getloadavg()[0]}
        result.update(enqueue(tmp, env, args.jobs, args.reuse_db))
        print(f"  enqueued: {result}")
        result["imports"] = import_profile(env, tmp)
        result["timeline"] = startup_timeline(env, tmp / "imagerun.db")
        starts = [first_request(url, env, tmp, args.run_seconds) for _ in range(args.starts)]
        result["starts"] = starts
        result["first_request_s"] = median([s["first_request_s"] for s in starts])
        result["requests_per_s"] = median([s["requests_per_s"] for s in starts])
        result.update(status(env, tmp))
        result["load_after"] = os.getloadavg()[0]
    return result


def report(runs: list[dict[str, Any]], jobs: int) -> None:
    def cell(run: dict[str, Any], key: str, unit: str) -> str:
        value = run.get(key)
        if isinstance(value, float):
            return f"{value:.2f} {unit}".strip()
        return "-" if value is None else f"{value} {unit}".strip()

    rows = [
        [label, *(cell(r, key, unit) for r in runs)]
        for label, key, unit in [
            ("check: wall", "check_s", "s"),
            ("check: CPU (user+sys)", "check_cpu_s", "s"),
            ("check: peak RSS", "check_rss_mb", "MiB"),
            ("submit: wall", "submit_s", "s"),
            ("submit: CPU (user+sys)", "submit_cpu_s", "s"),
            ("submit: peak RSS", "submit_rss_mb", "MiB"),
            ("run start -> first request (median)", "first_request_s", "s"),
            ("requests/s in the seconds after (median)", "requests_per_s", "/s"),
            ("status: wall (median of 3)", "status_s", "s"),
            ("status: CPU (user+sys)", "status_cpu_s", "s"),
            ("status: batch_status query alone", "batch_status_query_s", "s"),
            ("load average (1 min) before", "load_before", ""),
            ("load average (1 min) after", "load_after", ""),
        ]
    ]
    header = ["queue at scale", *(f"run {i + 1}" for i in range(len(runs)))]
    print(table(rows, header))
    for i, run in enumerate(runs):
        timeline = run["timeline"]
        print(f"\nrun {i + 1}: start-ups {[round(s['first_request_s'], 3) for s in run['starts']]}")
        imports = run["imports"]
        print(f"  import runner.cli: {imports['total_s']:.2f} s; {imports['self_s_by_package']}")
        print(f"  in-process start-up, first request at {timeline['first_request_s']:.3f} s:")
        for name, at, spent in timeline["steps"]:
            print(f"    {at:7.3f} +{spent:.3f}  {name}")
        for slow in timeline["slow_statements"]:
            print(f"    slow statement {slow['s']} s: {slow['sql'][:120]} -> {slow['plan']}")
    print(f"(N = {jobs:,} jobs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--starts", type=int, default=3, help="start-ups measured per run")
    parser.add_argument("--run-seconds", type=float, default=3.0)
    parser.add_argument("--reuse-db", type=Path, help="copy this submitted database, skip submit")
    args = parser.parse_args()
    runs = []
    for i in range(args.runs):
        print(f"run {i + 1} of {args.runs} (load {os.getloadavg()[0]:.2f})")
        with tempfile.TemporaryDirectory(prefix="queue-scale-") as tmp:
            runs.append(one_run(args, Path(tmp)))
    report(runs, args.jobs)
    path = write_results("queue_scale", {"args": vars(args), "runs": runs})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
