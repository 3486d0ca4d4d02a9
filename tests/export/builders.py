"""A realistic finished batch, built through the store's own verbs with real image files.

The sample batch ``pets`` (jobs in id order):

====  ==========  ===========================================================  ==========
 idx  id          what happened                                                metadata
====  ==========  ===========================================================  ==========
 1    cat-1       server_error (charged $0.01), retried, ok: 1 PNG 32×24        sku SKU-1
 2    dog-2       ok with n=3: PNG 16×16, PNG 16×16, JPEG 16×16                 sku SKU-2
 3    evil        ok: 1 PNG 20×30; the prompt holds ``<script>``                sku ../evil
 4    cat-dup     ok: 1 PNG 24×24                                               sku SKU-1
 5    broken      invalid_request (400), failed                                 sku SKU-5
 6    limbo       request sent, worker died: ``unknown``                        —
 7    later       never ran (queued)                                            —
====  ==========  ===========================================================  ==========
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from PIL import Image

from runner.models import ChargeEvidence, ChargeStatus, Job, JobSpec, Outcome, utcnow
from runner.store import AttemptResult, AttemptStart, BatchInfo, OutputRecord, Store
from runner.store.exports import ExportOps

ROUTE = "sandbox-laozhang"
EVIL_PROMPT = '<script>alert("pwned")</script> a cat & "friends" <img src=x onerror=alert(1)>'
COLORS = [(200, 40, 40), (40, 160, 60), (40, 80, 200), (220, 180, 30), (120, 40, 160)]


class ExportStore(Store, ExportOps):
    """``Store`` with the export queries, until they join its bases."""


@dataclass(frozen=True, slots=True)
class Sample:
    store: ExportStore
    batch: BatchInfo
    data_dir: Path
    db_path: Path

    def truth(self) -> list[dict[str, Any]]:
        """The batch's outputs as the database file holds them, read with plain ``sqlite3``."""
        query = """
            SELECT j.ext_id AS id, o.k, o.sha256, o.path, o.bytes, j.meta, o.attempt_id,
                   a.provider_request_id, a.gateway_request_id
            FROM outputs o JOIN jobs j ON j.id = o.job_id JOIN attempts a ON a.id = o.attempt_id
            WHERE o.batch_id = ? ORDER BY o.job_id, o.k
        """
        with closing(sqlite3.connect(self.db_path)) as conn:
            conn.row_factory = sqlite3.Row
            rows = [dict(r) for r in conn.execute(query, (self.batch.id,))]
        for row in rows:
            row["metadata"] = json.loads(row.pop("meta"))
        return rows


def spec(i: int, ext_id: str, prompt: str, metadata: dict[str, Any], **params: Any) -> JobSpec:
    return JobSpec(
        key=f"{ext_id}-{secrets.token_hex(4)}",
        ext_id=ext_id,
        line=i,
        prompt=prompt,
        params={"size": "1024x1024", **params},
        metadata=metadata,
    )


def sample_specs() -> list[JobSpec]:
    """The sample's manifest lines, with fresh job keys (keys are unique across batches)."""
    return [
        spec(1, "cat-1", "a ginger cat on a windowsill", {"sku": "SKU-1", "tags": ["cat", "ü"]}),
        spec(2, "dog-2", "three puppies", {"sku": "SKU-2"}, n=3),
        spec(3, "evil", EVIL_PROMPT, {"sku": "../evil"}),
        spec(4, "cat-dup", "another cat", {"sku": "SKU-1"}),
        spec(5, "broken", "an impossible size", {"sku": "SKU-5"}),
        spec(6, "limbo", "the request that never came back", {}),
        spec(7, "later", "not run yet", {}),
    ]


def image_bytes(width: int, height: int, color: tuple[int, int, int], fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, fmt)
    return buffer.getvalue()


def start_of(job: Job, worker: str = "w1") -> AttemptStart:
    return AttemptStart(
        id=f"req_{secrets.token_hex(8)}",
        job_id=job.id,
        batch_id=job.batch_id,
        worker_id=worker,
        route=ROUTE,
        provider="laozhang",
        shape="images",
        endpoint="/v1/images/generations",
        model="gpt-image-2",
        billing_unit="call",
        params={"prompt": job.prompt, **job.params},
        worst_case_usd=0.03,
        started_at=utcnow(),
    )


def result_of(
    start: AttemptStart, outcome: Outcome, *, usd: float, charged: bool, **fields: Any
) -> AttemptResult:
    return AttemptResult(
        id=start.id,
        job_id=start.job_id,
        outcome=outcome,
        finished_at=utcnow(),
        latency_ms=120.0,
        provider_request_id=f"prov-{start.id[-6:]}",
        gateway_request_id=f"gw-{start.id[-6:]}",
        expected_usd=usd,
        charge_status=ChargeStatus.CHARGED if charged else ChargeStatus.NOT_CHARGED,
        charge_evidence=ChargeEvidence.POLICY,
        **fields,
    )


def write_output(
    data_dir: Path, start: AttemptStart, k: int, size: tuple[int, int], fmt: str = "PNG"
) -> OutputRecord:
    """Write a real image under the data directory and describe it as the worker would."""
    data = image_bytes(*size, COLORS[(start.job_id + k) % len(COLORS)], fmt)
    ext = fmt.lower()
    relative = f"{start.batch_id}/{start.job_id}-{k}.{ext}"
    path = data_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return OutputRecord(
        job_id=start.job_id,
        batch_id=start.batch_id,
        attempt_id=start.id,
        k=k,
        path=relative,
        sha256=hashlib.sha256(data).hexdigest(),
        width=size[0],
        height=size[1],
        format=ext,
        bytes=len(data),
        worker_id=start.worker_id,
        created_at=utcnow(),
    )


async def succeed(
    store: Store, data_dir: Path, job: Job, sizes: list[tuple[int, int, str]]
) -> None:
    start = start_of(job)
    await store.start_attempt(start)
    files = [write_output(data_dir, start, k, (w, h), fmt) for k, (w, h, fmt) in enumerate(sizes)]
    result = result_of(start, Outcome.OK, usd=0.03, charged=True, http_status=200)
    await store.complete(result, files)


async def build_sample(store: Store, data_dir: Path, *, name: str = "pets") -> BatchInfo:
    """Submit and "run" the sample batch; returns its (refreshed) info."""
    enqueued = await store.submit(
        name=name,
        route=ROUTE,
        manifest=f"/jobs/{name}.jsonl",
        manifest_sha256="0" * 64,
        route_snapshot={"name": ROUTE},
        budget_usd=None,
        specs=sample_specs(),
    )
    batch = enqueued.batch
    # Leases that have already run out: recover_expired then finds the "dead" worker's job.
    jobs = await store.claim(worker_id="w1", batch_ids=[batch.id], limit=100, lease_seconds=-1)
    by_id = {j.ext_id: j for j in jobs}

    first = start_of(by_id["cat-1"])
    await store.start_attempt(first)
    await store.retry_later(
        result_of(first, Outcome.SERVER_ERROR, usd=0.01, charged=True, http_status=502),
        utcnow() - timedelta(seconds=1),
    )
    [retry] = await store.claim(worker_id="w1", batch_ids=[batch.id], limit=1, lease_seconds=60)
    await succeed(store, data_dir, retry, [(32, 24, "PNG")])

    await succeed(
        store, data_dir, by_id["dog-2"], [(16, 16, "PNG"), (16, 16, "PNG"), (16, 16, "JPEG")]
    )
    await succeed(store, data_dir, by_id["evil"], [(20, 30, "PNG")])
    await succeed(store, data_dir, by_id["cat-dup"], [(24, 24, "PNG")])

    bad = start_of(by_id["broken"])
    await store.start_attempt(bad)
    await store.fail(
        result_of(
            bad,
            Outcome.INVALID_REQUEST,
            usd=0.0,
            charged=False,
            http_status=400,
            error_message="Invalid size <b>9x9</b> (request id: gw-123)",
        )
    )
    await store.start_attempt(start_of(by_id["limbo"]))
    recovery = await store.recover_expired()
    assert (recovery.unknown, recovery.requeued) == (1, 1)
    return await store.find_batch(batch.id)
