"""The sandbox's Batch API at scale, beside the same images as synchronous requests.

Usage::

    python bench/sandbox_batch.py [--lines 10000] [--size 1024x1024] [--grain] [--concurrency 8]

Each mode gets its own ``imagerun sandbox`` process (so its peak RSS is its own):

- ``sync``: the lines' bodies POSTed to ``/v1/images/generations``, ``--concurrency`` at a time,
  each answer read and dropped (the baseline);
- ``batch``: the lines uploaded as one JSONL file, one batch created and polled every 0.5 s,
  its output file downloaded streamed to disk, every line counted.

Printed per mode: wall seconds (for the batch, from upload to downloaded output), images per
second, the sandbox process's peak RSS (``VmHWM``), the bytes of images returned, and what the
sandbox charged. Writes ``bench/results/sandbox_batch.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _support import SANDBOX_PIDS, sandbox_process, scratch, table, write_results

KEY = "sk-bench-batch"
HEADERS = {"Authorization": f"Bearer {KEY}"}


def _peak_rss_mib(url: str) -> float:
    status = Path(f"/proc/{SANDBOX_PIDS[url]}/status").read_text()
    line = next(row for row in status.splitlines() if row.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def _bodies(lines: int, size: str) -> list[dict[str, Any]]:
    return [
        {"model": "gpt-image-2", "prompt": f"bench product render {i}", "size": size}
        for i in range(lines)
    ]


def _charged(url: str) -> float:
    return float(httpx.get(f"{url}/_sandbox/state", timeout=60).json()["charged_usd"])


async def _sync(url: str, bodies: list[dict[str, Any]], concurrency: int) -> tuple[float, int]:
    pending = iter(bodies)
    returned = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal returned
        for body in pending:
            answer = await client.post("/openai/v1/images/generations", json=body)
            answer.raise_for_status()
            returned += len(answer.json()["data"][0]["b64_json"]) * 3 // 4

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=600) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return time.perf_counter() - started, returned


def _batch(url: str, bodies: list[dict[str, Any]], work: Path) -> tuple[float, int, int]:
    source = work / "input.jsonl"
    with source.open("w") as out:
        for i, body in enumerate(bodies):
            row = {"custom_id": f"l{i}", "method": "POST", "url": "/v1/images/generations"}
            out.write(json.dumps(row | {"body": body}) + "\n")
    api = f"{url}/openai/v1"
    started = time.perf_counter()
    with httpx.Client(headers=HEADERS, timeout=600) as client, source.open("rb") as handle:
        file = client.post(
            f"{api}/files", files={"file": ("input.jsonl", handle)}, data={"purpose": "batch"}
        ).json()
        batch = client.post(
            f"{api}/batches",
            json={
                "input_file_id": file["id"],
                "endpoint": "/v1/images/generations",
                "completion_window": "24h",
            },
        ).json()
        while batch["status"] not in ("completed", "failed", "expired", "cancelled"):
            time.sleep(0.5)
            batch = client.get(f"{api}/batches/{batch['id']}").json()
        assert batch["status"] == "completed", batch
        lines = returned = 0
        with client.stream("GET", f"{api}/files/{batch['output_file_id']}/content") as answer:
            for row in answer.iter_lines():
                if row:
                    item = json.loads(row)
                    returned += len(item["response"]["body"]["data"][0]["b64_json"]) * 3 // 4
                    lines += 1
    return time.perf_counter() - started, lines, returned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--size", default="1024x1024")
    parser.add_argument("--grain", action="store_true", help="photo-like, ~2.8 MB PNGs")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--dir", help="where the input file goes (default: tmpfs if any)")
    args = parser.parse_args()
    options = ["--balance", "10000000", "--batch-window", "86400"]
    options += ["--batch-concurrency", str(args.concurrency), *(["--grain"] * args.grain)]
    bodies = _bodies(args.lines, args.size)
    rows, results = [], {}
    with sandbox_process(*options) as url:
        wall, returned = asyncio.run(_sync(url, bodies, args.concurrency))
        results["sync"] = (wall, args.lines, returned, _peak_rss_mib(url), _charged(url))
    with (
        sandbox_process(*options) as url,
        tempfile.TemporaryDirectory(dir=scratch(args.dir)) as tmp,
    ):
        wall, lines, returned = _batch(url, bodies, Path(tmp))
        results["batch"] = (wall, lines, returned, _peak_rss_mib(url), _charged(url))
    for mode, (wall, lines, returned, rss, usd) in results.items():
        rows.append(
            [
                mode,
                lines,
                f"{wall:.1f}",
                f"{lines / wall:.0f}",
                f"{rss:.0f}",
                f"{returned / 2**20:.0f}",
                f"{usd:.2f}",
            ]
        )
    header = ["mode", "images", "wall s", "images/s", "sandbox peak RSS MiB", "image MiB", "$"]
    print(table(rows, header))
    keys = ("wall_s", "images", "image_bytes", "sandbox_peak_rss_mib", "charged_usd")
    data = {mode: dict(zip(keys, values, strict=True)) for mode, values in results.items()}
    write_results("sandbox_batch", {"args": vars(args), **data})


if __name__ == "__main__":
    main()
