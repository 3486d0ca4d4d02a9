"""Queue at scale: submit, start-up and status with a million jobs queued (SQLite).

A generation-only manifest of N short prompts (default 1,000,000; one line in 1,000 also sets
size and quality) on route ``sandbox``. Measured, each in a fresh child process:

- ``imagerun check`` and ``imagerun submit``: wall time and peak RSS (GNU time);
- start-up: wall clock from just before ``imagerun run`` is spawned to the first request the
  sandbox logs (its ``time``), with every job still queued; the run is then let go for a few
  seconds and stopped with SIGINT (graceful). Repeated ``--starts`` times;
- ``imagerun status``: wall time of the command, and of ``Store.batch_status`` alone, on the
  queued million and again on a *finished* batch of 1,000,000 attempts: every job then gets
  one ``ok`` attempt and one output, written straight into the file by SQL (a run of a million
  would take half an hour and measure nothing more about ``status``).

Plus where start-up goes: ``-X importtime`` of ``runner.cli``, and a timeline of one start-up
run in this process (``app.run`` with every store verb, ``adopt_orphans`` and
``sweep_temporaries`` timed, until the first request leaves), with the query plan of every
statement that took over 20 ms.

    python bench/queue_scale.py [--jobs 1000000] [--runs 2] [--starts 3] [--reuse-db FILE]
                                [--dir DIR] [--status-only] [--baseline CHECKOUT]
                                [--postgres ADMIN_URL]

Scratch goes to tmpfs (``/dev/shm``) when the machine has one; ``--dir`` picks another place.
``--status-only`` skips the start-up measurements. ``--baseline`` times another checkout's
``status`` right after this one's, each time on a copy of the same database (taken to that
checkout's schema revision by the migrations here): the before and after of one run.
``--postgres postgresql://postgres@127.0.0.1:5432/postgres`` adds the same on PostgreSQL
(``_pg_status.py``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from _pg_status import postgres_status
from _status import CLI, TREE, run_timed, schema_revision, status, status_of
from _support import (
    PYTHON,
    imagerun_env,
    median,
    sandbox_process,
    scratch,
    table,
    write_results,
)
from _timeline import startup_timeline

from runner.store import migrate


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


#: Every job of the file gets one ``ok``, charged attempt and one output: a finished batch.
FINISH_EVERY_JOB = (
    """INSERT INTO attempts (id, job_id, batch_id, number, worker_id, route, provider, shape,
        endpoint, model, billing_unit, state, outcome, http_status, provider_request_id,
        started_at, finished_at, latency_ms, usage, params, images_returned, worst_case_usd,
        expected_usd, charge_status, charge_evidence)
    SELECT 'ir-' || lower(hex(randomblob(12))), id, batch_id, 1, 'bench-worker', 'sandbox',
        'sandbox', 'images', '/images/generations', 'gpt-image-1', 'tokens', 'done', 'ok', 200,
        'req_' || lower(hex(randomblob(12))), updated_at, updated_at, 812.5,
        '{"input_tokens": 12, "output_tokens": 272, "total_tokens": 284}',
        json_set(params, '$.prompt', prompt), 1, 0.25, 0.011, 'charged', 'policy'
    FROM jobs""",
    """INSERT INTO outputs (job_id, batch_id, attempt_id, k, path, sha256, width, height,
        format, bytes, worker_id, created_at)
    SELECT job_id, batch_id, id, 0, batch_id || '/' || job_id || '-0.png',
        lower(hex(randomblob(32))), 64, 64, 'png', 1234, 'bench-worker', finished_at
    FROM attempts""",
    """UPDATE jobs SET state = 'succeeded', attempts = 1, last_outcome = 'ok',
        first_attempt_at = updated_at, finished_at = updated_at, lease_owner = NULL,
        lease_expires = NULL, next_at = NULL""",
)


def finish_every_job(db_file: Path) -> float:
    """Replace whatever a short run left with one ``ok`` attempt and output per job."""
    started = time.perf_counter()
    db = sqlite3.connect(db_file)
    try:
        with db:
            db.execute("DELETE FROM outputs")
            db.execute("DELETE FROM attempts")
            for statement in FINISH_EVERY_JOB:
                db.execute(statement)
        # A run's commits are checkpointed as they go; these statements leave every page they
        # wrote in the WAL (over 1 GB), which the status timed next would read through. A
        # ``with`` alone does not close the connection (the WAL stayed until the bench exited),
        # and the baseline, timed on a checkpointed copy, did not pay for it.
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    return time.perf_counter() - started


def import_profile(env: dict[str, str], tmp: Path, top: int = 6) -> dict[str, Any]:
    """``python -X importtime`` of what ``imagerun run`` imports (``runner.cli.run``; ``status``
    needs less): total, and self time by top package."""
    done = subprocess.run(
        [PYTHON, "-X", "importtime", "-c", "import runner.cli.run"],
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


def one_run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    with sandbox_process("--tiny") as url:
        env = imagerun_env(tmp, {"IMAGERUN_ROUTE_SANDBOX_BASE_URL": f"{url}/openai/v1"})
        result: dict[str, Any] = {"load_before": os.getloadavg()[0]}
        result.update(enqueue(tmp, env, args.jobs, args.reuse_db))
        # A reused database may be at an older revision: migrate it here, not in a timed run.
        migrate.upgrade(env["IMAGERUN_DB"])
        print(f"  enqueued: {result}")
        if not args.status_only:
            result.update(startups(args, env, tmp, url))
        result.update(status(env, tmp, args.baseline))
        result["finish_s"] = finish_every_job(tmp / "imagerun.db")
        finished = status(env, tmp, args.baseline)
        result.update({f"finished_{k}": v for k, v in finished.items()})
        if args.postgres:
            print(f"  PostgreSQL (load {os.getloadavg()[0]:.2f})")
            base = (args.baseline, schema_revision(args.baseline)) if args.baseline else None
            pg = postgres_status(
                args.postgres,
                args.jobs,
                env,
                lambda tree, env, url, n: status_of(tree, env, url, tmp, n),
                TREE,
                base,
            )
            result.update({f"pg_{k}": v for k, v in pg.items()})
        result["load_after"] = os.getloadavg()[0]
    return result


def startups(args: argparse.Namespace, env: dict[str, str], tmp: Path, url: str) -> dict[str, Any]:
    """Where start-up goes, then ``--starts`` timed start-ups of ``imagerun run``."""
    result: dict[str, Any] = {"imports": import_profile(env, tmp)}
    result["timeline"] = startup_timeline(env, tmp / "imagerun.db")
    starts = [first_request(url, env, tmp, args.run_seconds) for _ in range(args.starts)]
    result["starts"] = starts
    result["first_request_s"] = median([s["first_request_s"] for s in starts])
    result["requests_per_s"] = median([s["requests_per_s"] for s in starts])
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
            ("  baseline: status wall", "baseline_status_s", "s"),
            ("  baseline: status CPU", "baseline_status_cpu_s", "s"),
            ("  baseline: batch_status query alone", "baseline_batch_status_query_s", "s"),
            ("finished batch of N attempts: status wall", "finished_status_s", "s"),
            ("finished: status CPU (user+sys)", "finished_status_cpu_s", "s"),
            ("finished: batch_status query alone", "finished_batch_status_query_s", "s"),
            ("  baseline: finished status wall", "finished_baseline_status_s", "s"),
            ("  baseline: finished status CPU", "finished_baseline_status_cpu_s", "s"),
            ("  baseline: finished query alone", "finished_baseline_batch_status_query_s", "s"),
            ("PostgreSQL: status wall", "pg_status_s", "s"),
            ("PostgreSQL: batch_status query alone", "pg_batch_status_query_s", "s"),
            ("  baseline: status wall", "pg_baseline_status_s", "s"),
            ("  baseline: batch_status query alone", "pg_baseline_batch_status_query_s", "s"),
            ("PostgreSQL finished: status wall", "pg_finished_status_s", "s"),
            ("PostgreSQL finished: status CPU (user+sys)", "pg_finished_status_cpu_s", "s"),
            ("PostgreSQL finished: query alone", "pg_finished_batch_status_query_s", "s"),
            ("  baseline: finished status wall", "pg_finished_baseline_status_s", "s"),
            ("  baseline: finished status CPU", "pg_finished_baseline_status_cpu_s", "s"),
            ("  baseline: finished query alone", "pg_finished_baseline_batch_status_query_s", "s"),
            ("load average (1 min) before", "load_before", ""),
            ("load average (1 min) after", "load_after", ""),
        ]
    ]
    header = ["queue at scale", *(f"run {i + 1}" for i in range(len(runs)))]
    print(table(rows, header))
    for i, run in enumerate(runs):
        if "timeline" not in run:
            continue
        timeline = run["timeline"]
        print(f"\nrun {i + 1}: start-ups {[round(s['first_request_s'], 3) for s in run['starts']]}")
        imports = run["imports"]
        print(
            f"  import runner.cli.run: {imports['total_s']:.2f} s; {imports['self_s_by_package']}"
        )
        print(f"  in-process start-up, first request at {timeline['first_request_s']:.3f} s:")
        for name, at, spent in timeline["steps"]:
            print(f"    {at:7.3f} +{spent:.3f}  {name}")
        for slow in timeline["slow_statements"]:
            print(f"    slow statement {slow['s']} s: {slow['sql'][:120]} -> {slow['plan']}")
    for i, run in enumerate(runs):
        if "pg_spend_plan" in run:
            print(f"\nrun {i + 1}: PostgreSQL spend query, EXPLAIN ANALYZE:")
            print("\n".join(f"  {line}" for line in run["pg_spend_plan"]))
    print(f"(N = {jobs:,} jobs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--starts", type=int, default=3, help="start-ups measured per run")
    parser.add_argument("--run-seconds", type=float, default=3.0)
    parser.add_argument("--reuse-db", type=Path, help="copy this submitted database, skip submit")
    parser.add_argument("--dir", help="scratch directory (default: tmpfs if available)")
    parser.add_argument("--status-only", action="store_true", help="skip the start-ups")
    parser.add_argument(
        "--postgres",
        metavar="ADMIN_URL",
        help="also time status on PostgreSQL (a scratch database on this server, dropped after)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout (e.g. /work/main): its status is timed on a copy of the same data",
    )
    args = parser.parse_args()
    runs = []
    for i in range(args.runs):
        print(f"run {i + 1} of {args.runs} (load {os.getloadavg()[0]:.2f})")
        with tempfile.TemporaryDirectory(prefix="queue-scale-", dir=scratch(args.dir)) as tmp:
            runs.append(one_run(args, Path(tmp)))
    report(runs, args.jobs)
    path = write_results("queue_scale", {"args": vars(args), "runs": runs})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
