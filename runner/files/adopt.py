"""Resuming after a crash: make the image files on disk agree with the recorded outputs.

A worker writes an image (temporary file, then rename) before it records it. Killed in
between, it leaves an *orphan*: a complete, verified file the database does not know. On the
next run, an orphan of a job held as ``unknown`` (its request was in flight) is **adopted**:
the file proves the request succeeded, so the job is finished with it and nothing is resent.
Any other orphan is removed. Temporary files are swept before this runs.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio

from runner.errors import AttemptError
from runner.files.images import TMP_PREFIX, inspect_image
from runner.models import JobState, Outcome, utcnow
from runner.pricing import PriceBook, attempt_cost
from runner.routes import Catalog
from runner.store import BatchInfo, OutputRecord, Store
from runner.store.recovery import JobFiles

#: Jobs whose unrecorded files can only be leftovers (no attempt of theirs is in flight).
_SETTLED = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
_OUTPUT_NAME = re.compile(r"^(\d+)-(\d+)\.(png|jpeg|webp|gif)$")


@dataclass(frozen=True, slots=True, kw_only=True)
class FilesReport:
    adopted_jobs: int = 0
    removed_files: int = 0


async def reconcile_files(
    store: Store,
    data_dir: Path,
    batches: Sequence[BatchInfo],
    catalog: Catalog,
    book: PriceBook,
) -> FilesReport:
    """Adopt or remove the orphan image files of ``batches``."""
    adopted = removed = 0
    for batch in batches:
        names = await anyio.to_thread.run_sync(_listing, data_dir / batch.id)
        if not names:
            continue
        recorded = await store.recorded_paths([batch.id])
        orphans: dict[int, list[str]] = defaultdict(list)
        for name in names:
            relative = f"{batch.id}/{name}"
            match = _OUTPUT_NAME.match(name)
            if match and relative not in recorded:
                orphans[int(match.group(1))].append(relative)
        if not orphans:
            continue
        known = await store.jobs_for_files(list(orphans))
        for job_id, paths in orphans.items():
            job = known.get(job_id)
            if job is not None and await _adopt(store, data_dir, batch, job, paths, catalog, book):
                adopted += 1
            elif job is None or job.state in _SETTLED:
                await anyio.to_thread.run_sync(_remove, data_dir, paths)
                removed += len(paths)
            # Anything else may belong to a job another worker is finishing right now.
    return FilesReport(adopted_jobs=adopted, removed_files=removed)


async def _adopt(
    store: Store,
    data_dir: Path,
    batch: BatchInfo,
    job: JobFiles,
    paths: list[str],
    catalog: Catalog,
    book: PriceBook,
) -> bool:
    if job.state is not JobState.UNKNOWN or job.lost_attempt is None or job.recorded:
        return False
    attempt_id = job.lost_attempt
    try:
        records = [
            await anyio.to_thread.run_sync(_record, data_dir, job, attempt_id, path)
            for path in sorted(paths)
        ]
    except (OSError, AttemptError):
        return False
    route = catalog.routes.get(batch.route)
    cost = 0.0
    if route is not None:
        cost = attempt_cost(
            book,
            route,
            params={**job.params, "prompt": job.prompt},
            usage=None,
            outcome=Outcome.OK,
            images=len(records),
        ).expected_usd
    return await store.adopt(job.job_id, attempt_id, records, cost)


def _record(data_dir: Path, job: JobFiles, attempt_id: str, relative: str) -> OutputRecord:
    data = (data_dir / relative).read_bytes()
    info = inspect_image(data)
    match = _OUTPUT_NAME.match(Path(relative).name)
    assert match is not None
    return OutputRecord(
        job_id=job.job_id,
        batch_id=job.batch_id,
        attempt_id=attempt_id,
        k=int(match.group(2)),
        path=relative,
        sha256=hashlib.sha256(data).hexdigest(),
        width=info.width,
        height=info.height,
        format=info.format,
        bytes=len(data),
        worker_id=None,
        created_at=utcnow(),
    )


def _listing(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return [p.name for p in root.iterdir() if not p.name.startswith(TMP_PREFIX)]


def _remove(data_dir: Path, paths: list[str]) -> None:
    for relative in paths:
        (data_dir / relative).unlink(missing_ok=True)
