"""10,000 jobs through the Batch API route on the sandbox: time, memory and cost.

Usage::

    python bench/batch_api.py [--jobs 10000] [--size 1024x1024] [--prompts 32]
                              [--window 3600] [--sync-sample 200] [--dir D]

Every measurement gets its own ``imagerun sandbox`` process (the sandbox's work and memory
are never the measured process's), with the Batch API's 24 h window compressed to
``--window`` seconds (a ceiling: the sandbox answers a batch as fast as it renders it):

- baseline, ``raw client``: the same lines as one JSONL file, uploaded, one batch created,
  polled every 0.5 s, its output file streamed to disk and counted (no queue, no ledger, no
  image kept): what the sandbox itself needs;
- ``imagerun``: the jobs submitted on ``sandbox-openai-batch``, then ``imagerun run`` in a
  child process (wall time and peak RSS from GNU time, i.e. the child's ``getrusage``);
  every image verified and stored, every line in the ledger;
- ``synchronous``: the first ``--sync-sample`` jobs run on ``sandbox-openai`` (the same
  prompts and sizes), for the per-image price of the synchronous route.

Printed: wall seconds end to end (for imagerun, of ``imagerun run``; ``submit`` is timed
apart), the remote batch's own lifetime on the sandbox (created to completed, whole seconds)
and how much longer each client took than that, the window, peak RSS, images, and cost (the
ledger's, per image, and for all ``--jobs`` on each route).
Prompts cycle through ``--prompts`` distinct texts so the sandbox renders each picture once
(its render cache), leaving the figures about the client. Writes
``bench/results/batch_api.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _support import (
    PYTHON,
    SANDBOX_PIDS,
    imagerun_env,
    sandbox_process,
    scratch,
    table,
    timed,
    write_results,
)

KEY = "sk-bench-batch-api"
BATCH_ROUTE, SYNC_ROUTE = "sandbox-openai-batch", "sandbox-openai"
CLI = [PYTHON, "-m", "runner.cli"]


def _lines(jobs: int, prompts: int, size: str) -> list[dict[str, Any]]:
    return [
        {
            "id": f"j{i}",
            "prompt": f"bench product render {i % prompts}",
            "size": size,
            "quality": "low",
        }
        for i in range(jobs)
    ]


def _sandbox_options(window: float) -> list[str]:
    return ["--balance", "10000000", "--batch-window", str(window)]


def _sandbox_batches(url: str) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {KEY}"}
    listed = httpx.get(f"{url}/openai/v1/batches", params={"limit": 100}, headers=headers)
    listed.raise_for_status()
    return list(listed.json()["data"])


def _lifetime(batches: list[dict[str, Any]]) -> int:
    """Seconds from the first batch's creation to the last one's completion."""
    return max(b["completed_at"] or 0 for b in batches) - min(b["created_at"] for b in batches)


def _vm_hwm_mib(url: str) -> float:
    status = Path(f"/proc/{SANDBOX_PIDS[url]}/status").read_text()
    row = next(r for r in status.splitlines() if r.startswith("VmHWM:"))
    return int(row.split()[1]) / 1024


def raw_client(lines: list[dict[str, Any]], window: float, work: Path) -> dict[str, Any]:
    """The baseline: upload, create, poll, download; nothing else."""
    source = work / "input.jsonl"
    with source.open("w") as out:
        for line in lines:
            body = {k: v for k, v in line.items() if k != "id"} | {"model": "gpt-image-2"}
            row = {"custom_id": line["id"], "method": "POST", "url": "/v1/images/generations"}
            out.write(json.dumps(row | {"body": body}) + "\n")
    with sandbox_process(*_sandbox_options(window)) as url:
        api, headers = f"{url}/openai/v1", {"Authorization": f"Bearer {KEY}"}
        started = time.perf_counter()
        with httpx.Client(headers=headers, timeout=600) as client, source.open("rb") as handle:
            upload = client.post(
                f"{api}/files", files={"file": ("in.jsonl", handle)}, data={"purpose": "batch"}
            )
            body = {
                "input_file_id": upload.json()["id"],
                "endpoint": "/v1/images/generations",
                "completion_window": "24h",
            }
            batch = client.post(f"{api}/batches", json=body).json()
            while batch["status"] not in ("completed", "failed", "expired", "cancelled"):
                time.sleep(0.5)
                batch = client.get(f"{api}/batches/{batch['id']}").json()
            done = 0
            output = work / "output.jsonl"
            content = f"{api}/files/{batch['output_file_id']}/content"
            with client.stream("GET", content) as answer, output.open("wb") as sink:
                for chunk in answer.iter_bytes():
                    sink.write(chunk)
            with output.open("rb") as results:
                done = sum(1 for row in results if row.strip())
        wall = time.perf_counter() - started
        return {
            "wall_s": wall,
            "images": done,
            "sandbox_lifetime_s": _lifetime([batch]),
            "sandbox_peak_rss_mib": _vm_hwm_mib(url),
        }


def _costs(env: dict[str, str], root: Path) -> dict[str, Any]:
    done = subprocess.run(
        [*CLI, "costs", "--json"], env=env, cwd=root, capture_output=True, text=True, check=True
    )
    return dict(json.loads(done.stdout))


def through_imagerun(
    lines: list[dict[str, Any]], route: str, window: float, work: Path
) -> dict[str, Any]:
    """Submit ``lines`` on ``route`` and time ``imagerun run`` (own process, own sandbox)."""
    manifest = work / "jobs.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with sandbox_process(*_sandbox_options(window)) as url:
        name = route.upper().replace("-", "_")
        env = imagerun_env(work, {f"IMAGERUN_ROUTE_{name}_BASE_URL": f"{url}/openai/v1"})
        env["SANDBOX_OPENAI_API_KEY"] = KEY
        submit = [*CLI, "submit", str(manifest), "--route", route, "--name", "bench"]
        submit_s, _, _ = timed(submit, env, work)
        run = [*CLI, "run", "bench", "--rpm", "100000", "--concurrency", "8"]
        wall, rss, output = timed(run, env, work)
        images = sum(1 for _ in (work / "data").rglob("*.png"))
        if images != len(lines):
            raise RuntimeError(f"{images} of {len(lines)} images written:\n{output[-3000:]}")
        spend = _costs(env, work)
        by_route = {r["route"]: r for r in spend["by_route"]}[route]
        batches = _sandbox_batches(url) if route == BATCH_ROUTE else []
        return {
            "submit_s": submit_s,
            "wall_s": wall,
            "peak_rss_mib": rss,
            "images": images,
            "charged_usd": by_route["charged_usd"],
            "synchronous_usd": by_route["synchronous_usd"],
            "remote_batches": len(batches),
            "sandbox_lifetime_s": _lifetime(batches) if batches else None,
            "sandbox_peak_rss_mib": _vm_hwm_mib(url),
        }


def _report(
    args: argparse.Namespace, raw: dict[str, Any], batch: dict[str, Any], sync: Any
) -> None:
    jobs = args.jobs
    rows = [
        [
            "raw client (baseline)",
            raw["images"],
            1,
            f"{raw['wall_s']:.1f}",
            raw["sandbox_lifetime_s"],
            f"{raw['wall_s'] - raw['sandbox_lifetime_s']:+.1f}",
            "-",
            f"{raw['sandbox_peak_rss_mib']:.0f}",
            "-",
            "-",
        ],
        [
            f"imagerun run, {BATCH_ROUTE}",
            batch["images"],
            batch["remote_batches"],
            f"{batch['wall_s']:.1f}",
            batch["sandbox_lifetime_s"],
            f"{batch['wall_s'] - batch['sandbox_lifetime_s']:+.1f}",
            batch["peak_rss_mib"],
            f"{batch['sandbox_peak_rss_mib']:.0f}",
            f"{batch['charged_usd'] / batch['images']:.6f}",
            f"{batch['charged_usd'] / batch['images'] * jobs:.2f}",
        ],
        [
            f"imagerun run, {SYNC_ROUTE} (sample)",
            sync["images"],
            "-",
            f"{sync['wall_s']:.1f}",
            "-",
            "-",
            sync["peak_rss_mib"],
            f"{sync['sandbox_peak_rss_mib']:.0f}",
            f"{sync['charged_usd'] / sync['images']:.6f}",
            f"{sync['charged_usd'] / sync['images'] * jobs:.2f}",
        ],
    ]
    header = [
        "client",
        "images",
        "remote batches",
        "wall s",
        "batch lifetime s",
        "beyond it s",
        "peak RSS MiB",
        "sandbox RSS MiB",
        "$ / image",
        f"$ for {jobs}",
    ]
    print(table(rows, header))
    print(
        f"window {args.window:g} s (the 24 h window, compressed; a ceiling, not reached); "
        f"{BATCH_ROUTE} lines at the synchronous price: ${batch['synchronous_usd']:.2f}; "
        f"imagerun run beyond the raw client: {batch['wall_s'] - raw['wall_s']:+.1f} s "
        f"(submit before it: {batch['submit_s']:.1f} s); "
        f"load average {os.getloadavg()[0]:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--size", default="1024x1024")
    parser.add_argument("--prompts", type=int, default=32, help="distinct prompts (≤ 32 cached)")
    parser.add_argument("--window", type=float, default=3600.0)
    parser.add_argument("--sync-sample", type=int, default=200)
    parser.add_argument("--dir", help="database, files and outputs (default: tmpfs if any)")
    args = parser.parse_args()
    lines = _lines(args.jobs, args.prompts, args.size)
    where = scratch(args.dir)
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        raw = raw_client(lines, args.window, Path(tmp))
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        batch = through_imagerun(lines, BATCH_ROUTE, args.window, Path(tmp))
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        sample = lines[: min(args.sync_sample, args.jobs)]
        sync = through_imagerun(sample, SYNC_ROUTE, args.window, Path(tmp))
    _report(args, raw, batch, sync)
    path = write_results(
        "batch_api", {"args": vars(args), "raw_client": raw, "batch": batch, "synchronous": sync}
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
