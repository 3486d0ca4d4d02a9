"""Orphan adoption after a crash: make the image files on disk agree with the recorded outputs.

A worker writes an image (temporary file, then rename) before it records it. Killed in
between, it leaves an *orphan*: a complete, verified file the database does not know. On the
next run, an orphan of a job held as ``unknown`` (its request was in flight) is **adopted**:
the file proves the request succeeded, so the job is finished with it and nothing is resent.
Any other orphan is removed. Temporary files are swept before this runs.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import anyio

from runner.abc import FileAdoption
from runner.files.atomic import is_temporary
from runner.files.images import Expected, ImageError, check_expected, inspect_image
from runner.files.layout import OutputName, parse_output_name
from runner.files.outputs import OutputRecord, mismatch_summary, output_record
from runner.models import JobState, Outcome
from runner.pricing import PriceBook, PricedJob, attempt_cost
from runner.routes import Catalog

#: Jobs whose unrecorded files can only be leftovers (no attempt of theirs is in flight).
_SETTLED = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


@dataclass(frozen=True, slots=True, kw_only=True)
class JobFiles:
    """What the store knows about one job that has files on disk."""

    job_id: int
    batch_id: str
    state: JobState
    prompt: str
    params: dict[str, Any]
    #: How many source images the job sends, and whether it sends a mask (both are priced).
    images: int
    mask: bool
    recorded: frozenset[str]
    #: The job's attempt that a dead worker left in flight (closed as ``lost``), if any.
    lost_attempt: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class AdoptionReport:
    """What :func:`adopt_orphans` did."""

    adopted_jobs: int = 0
    removed_files: int = 0


class Batch(Protocol):
    """The two facts of a batch adoption needs."""

    @property
    def id(self) -> str: ...

    @property
    def route(self) -> str: ...


async def adopt_orphans(
    store: FileAdoption,
    data_dir: Path,
    batches: Sequence[Batch],
    catalog: Catalog,
    book: PriceBook,
) -> AdoptionReport:
    """Adopt or remove the orphan image files of ``batches``."""
    adopted = removed = 0
    for batch in batches:
        orphans = await _orphans(store, data_dir, batch.id)
        if not orphans:
            continue
        known = await store.jobs_for_files(list(orphans))
        for job_id, names in orphans.items():
            job = known.get(job_id)
            if job is not None and await _adopt(store, data_dir, batch, job, names, catalog, book):
                adopted += 1
            elif job is None or job.state in _SETTLED:
                # Read after the listing: a file recorded since (its worker finished the job
                # in between) is the job's output, not a leftover.
                stale = [n for n in names if job is None or n.path not in job.recorded]
                await anyio.to_thread.run_sync(_remove, data_dir, stale)
                removed += len(stale)
            # Anything else may belong to a job another worker is finishing right now.
    return AdoptionReport(adopted_jobs=adopted, removed_files=removed)


async def _orphans(
    store: FileAdoption, data_dir: Path, batch_id: str
) -> dict[int, list[OutputName]]:
    """The output files of a batch that no recorded output names, by job."""
    names = await anyio.to_thread.run_sync(_listing, data_dir / batch_id)
    if not names:
        return {}
    recorded = await store.recorded_paths([batch_id])
    orphans: dict[int, list[OutputName]] = defaultdict(list)
    for name in names:
        parsed = parse_output_name(batch_id, name)
        if parsed is not None and parsed.path not in recorded:
            orphans[parsed.job_id].append(parsed)
    return orphans


async def _adopt(
    store: FileAdoption,
    data_dir: Path,
    batch: Batch,
    job: JobFiles,
    names: list[OutputName],
    catalog: Catalog,
    book: PriceBook,
) -> bool:
    if job.state is not JobState.UNKNOWN or job.lost_attempt is None or job.recorded:
        return False
    attempt_id = job.lost_attempt
    expected = Expected.from_params(job.params)
    try:
        records = [
            await anyio.to_thread.run_sync(_record, data_dir, attempt_id, name, expected)
            for name in sorted(names, key=lambda n: n.k)
        ]
    except (OSError, ImageError):
        return False
    route = catalog.routes.get(batch.route)
    cost = 0.0
    refused = None
    if route is not None:
        refused = mismatch_summary(records) if route.on_mismatch == "fail" else None
        cost = attempt_cost(
            book,
            route,
            job=PricedJob.from_fields(
                prompt=job.prompt, params=job.params, images=job.images, mask=job.mask
            ),
            usage=None,
            outcome=Outcome.OK,
            images=len(records),
        ).expected_usd
    return await store.adopt(job.job_id, attempt_id, records, cost, refused=refused)


def _record(data_dir: Path, attempt_id: str, name: OutputName, expected: Expected) -> OutputRecord:
    data = (data_dir / name.path).read_bytes()
    info = inspect_image(data)
    return output_record(
        name,
        info,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        attempt_id=attempt_id,
        worker_id=None,
        mismatch=check_expected(info, expected),
    )


def _listing(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return [p.name for p in root.iterdir() if not is_temporary(p.name)]


def _remove(data_dir: Path, names: list[OutputName]) -> None:
    for name in names:
        (data_dir / name.path).unlink(missing_ok=True)
