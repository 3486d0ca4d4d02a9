"""Export at scale: N tiny outputs (default 100,000) exported as files + jsonl + parquet.

Builds a batch in a temporary SQLite database and data directory (jobs through the store's
``submit``; attempts and outputs inserted in bulk, which no production code does), then runs
the export twice in a fresh child process each (a first export, then an unchanged
re-export) and prints wall time and the child's peak RSS: the export alone, not the build.

    python bench/export_scale.py [--outputs N] [--formats files,jsonl,parquet] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image
from sqlalchemy import insert, select, update

from runner.export import export_batch
from runner.models import JobSpec, utcnow
from runner.store import Store
from runner.store.exports import ExportOps
from runner.store.tables import attempts, jobs, outputs

BATCH = "scale"
CHUNK = 5000


class _Store(Store, ExportOps):
    """The store with the export queries (harmless once ``Store`` has them itself)."""


def _png(i: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (i % 256, (i >> 8) % 256, (i >> 16) % 256)).save(buffer, "PNG")
    return buffer.getvalue()


def _specs(n: int) -> list[JobSpec]:
    return [
        JobSpec(
            key=f"scale-{i:07d}",
            ext_id=f"img-{i:07d}",
            line=i,
            prompt=f"a tiny test image number {i}",
            params={"size": "1024x1024", "quality": "low"},
            metadata={"sku": f"SKU-{i % 1000:04d}", "i": i},
        )
        for i in range(1, n + 1)
    ]


async def build(root: Path, n: int) -> None:
    """A finished batch of ``n`` one-output jobs, files included."""
    store = await _Store.open(f"sqlite+aiosqlite:///{root / 'bench.db'}")
    assert isinstance(store, _Store)  # open() is typed as returning a plain Store
    try:
        result = await store.submit(
            name=BATCH,
            route="sandbox",
            manifest="bench.jsonl",
            manifest_sha256="0" * 64,
            route_snapshot={},
            budget_usd=None,
            specs=_specs(n),
        )
        batch_id = result.batch.id
        async with store.engine.connect() as conn:
            ids = list(
                await conn.scalars(
                    select(jobs.c.id).where(jobs.c.batch_id == batch_id).order_by(jobs.c.id)
                )
            )
        for start in range(0, len(ids), CHUNK):
            await _finish_chunk(store, root / "data", batch_id, ids[start : start + CHUNK])
    finally:
        await store.close()


async def _finish_chunk(store: Store, data: Path, batch_id: str, ids: list[int]) -> None:
    now = utcnow()
    attempt_rows: list[dict[str, Any]] = []
    output_rows: list[dict[str, Any]] = []
    (data / batch_id).mkdir(parents=True, exist_ok=True)
    for job_id in ids:
        body = _png(job_id)
        relative = f"{batch_id}/{job_id}-0.png"
        (data / relative).write_bytes(body)
        attempt_id = f"req_{job_id:012d}"
        attempt_rows.append(
            {
                "id": attempt_id,
                "job_id": job_id,
                "batch_id": batch_id,
                "number": 1,
                "route": "sandbox",
                "provider": "sandbox",
                "shape": "images",
                "endpoint": "/v1/images/generations",
                "model": "gpt-image-2",
                "billing_unit": "call",
                "state": "done",
                "outcome": "ok",
                "http_status": 200,
                "provider_request_id": f"prov-{job_id}",
                "started_at": now,
                "finished_at": now,
                "params": {},
                "worst_case_usd": 0.03,
                "expected_usd": 0.03,
                "charge_status": "charged",
                "charge_evidence": "policy",
            }
        )
        output_rows.append(
            {
                "job_id": job_id,
                "batch_id": batch_id,
                "attempt_id": attempt_id,
                "k": 0,
                "path": relative,
                "sha256": hashlib.sha256(body).hexdigest(),
                "width": 8,
                "height": 8,
                "format": "png",
                "bytes": len(body),
                "created_at": now,
            }
        )
    async with store.engine.begin() as conn:
        await conn.execute(insert(attempts), attempt_rows)
        await conn.execute(insert(outputs), output_rows)
        await conn.execute(
            update(jobs)
            .where(jobs.c.id.in_(ids))
            .values(state="succeeded", attempts=1, last_outcome="ok", finished_at=now)
        )


async def export_once(root: Path, formats: list[str]) -> dict[str, Any]:
    """One export, measured inside this (child) process."""
    store = await _Store.open(f"sqlite+aiosqlite:///{root / 'bench.db'}", migrate=False)
    assert isinstance(store, _Store)  # open() is typed as returning a plain Store
    marks: list[int] = []

    def progress(done: int, total: int) -> None:
        if total and (not marks or done * 10 // total > marks[-1]):
            marks.append(done * 10 // total)

    try:
        batch = await store.find_batch(BATCH)
        began = time.perf_counter()
        report = await export_batch(
            store,
            batch,
            data_dir=root / "data",
            out_dir=root / "out",
            formats=formats,
            progress=progress,
        )
        seconds = time.perf_counter() - began
    finally:
        await store.close()
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "outputs": report.outputs,
        "progress_calls": len(marks),
        "formats": {
            name: {"written": r.written, "unchanged": r.unchanged, "skipped": r.skipped}
            for name, r in report.formats.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", type=int, default=100_000)
    parser.add_argument("--formats", default="files,jsonl,parquet")
    parser.add_argument("--keep", type=Path, help="build here and keep it (default: a temp dir)")
    parser.add_argument("--export-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    formats = args.formats.split(",")
    if args.export_only:
        print(json.dumps(asyncio.run(export_once(args.export_only, formats))))
        return
    root = args.keep or Path(tempfile.mkdtemp(prefix="imagerun-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        began = time.perf_counter()
        asyncio.run(build(root, args.outputs))
        print(f"built {args.outputs} outputs in {time.perf_counter() - began:.1f}s under {root}")
        for label in ("first export", "re-export"):
            child = subprocess.run(
                [sys.executable, __file__, "--export-only", str(root), "--formats", args.formats],
                check=True,
                capture_output=True,
                text=True,
            )
            print(f"{label}: {child.stdout.strip()}")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
