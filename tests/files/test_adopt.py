"""Orphan adoption: an image a dead worker wrote but never recorded finishes its job, once.

Against the real store: a job is claimed, its attempt started, its worker "dies" (the lease
runs out), recovery holds the job ``unknown``, and the image on disk is then adopted. An image
of another size than asked is adopted with its mismatch recorded; on a route with
``on_mismatch = "fail"`` the job fails, the image recorded all the same.
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import pytest
from PIL import Image

from runner.files.adopt import JobFiles, adopt_orphans
from runner.files.atomic import temporary_name
from runner.files.images import inspect_image
from runner.files.layout import output_path, parse_output_name
from runner.files.outputs import OutputRecord, output_record
from runner.models import JobState, Outcome
from runner.pricing import load_price_book
from runner.routes import load_catalog
from runner.store import Store
from runner.store.records import Recovery

from ..store.factories import (
    LAPSED,
    attempt_rows,
    claim_all,
    job_row,
    result_of,
    specs,
    start_of,
    submit,
)

pytestmark = pytest.mark.anyio
ROUTE = "sandbox"


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buffer, "PNG")
    return buffer.getvalue()


async def _lost_job(store: Store, data_dir: Path, image: bytes) -> tuple[str, int, str]:
    """A batch of one job whose worker died after writing ``image`` and before recording it."""
    batch = (await submit(store, "orphans", specs(1), route=ROUTE)).batch
    [job] = await store.claim(worker_id="dead", batch_ids=[batch.id], limit=1, lease_seconds=LAPSED)
    start = start_of(job, "dead")
    await store.start_attempt(start)
    assert await store.recover_expired() == Recovery(unknown=1)
    path = data_dir / output_path(batch.id, job.id, 0, "png")
    path.parent.mkdir(parents=True)
    path.write_bytes(image)
    # A half-written temporary beside it is never mistaken for an output.
    (path.parent / temporary_name(path.name)).write_bytes(image[:10])
    return batch.id, job.id, start.id


async def _adopt(store: Store, data_dir: Path, batch_id: str, on_mismatch: str = "keep") -> int:
    catalog = load_catalog({ROUTE: {"on_mismatch": on_mismatch}}, environ={})
    [batch] = [b for b in await store.list_batches() if b.id == batch_id]
    report = await adopt_orphans(store, data_dir, [batch], catalog, load_price_book())
    return report.adopted_jobs


async def _outputs(store: Store, batch_id: str) -> list[tuple[int, str | None, str | None]]:
    return [(o.width, o.asked, o.got) async for page in store.iter_outputs(batch_id) for o in page]


async def test_an_orphan_as_asked_finishes_its_job_charged(store: Store, tmp_path: Path) -> None:
    batch_id, job_id, attempt_id = await _lost_job(store, tmp_path, _png(1024, 1024))
    assert await _adopt(store, tmp_path, batch_id) == 1
    assert (await job_row(store, job_id)).state == JobState.SUCCEEDED
    [attempt] = await attempt_rows(store, job_id)
    assert (attempt.id, attempt.outcome, attempt.charge_status) == (attempt_id, "ok", "charged")
    assert await _outputs(store, batch_id) == [(1024, None, None)]
    # Adopted once: a second pass finds nothing left to adopt.
    assert await _adopt(store, tmp_path, batch_id) == 0


async def test_an_orphan_of_another_size_is_adopted_with_its_mismatch(
    store: Store, tmp_path: Path
) -> None:
    batch_id, job_id, _ = await _lost_job(store, tmp_path, _png(64, 64))
    assert await _adopt(store, tmp_path, batch_id) == 1
    assert (await job_row(store, job_id)).state == JobState.SUCCEEDED
    assert await _outputs(store, batch_id) == [(64, "1024x1024", "64x64")]


async def test_on_mismatch_fail_fails_an_adopted_job_and_keeps_its_image(
    store: Store, tmp_path: Path
) -> None:
    batch_id, job_id, _ = await _lost_job(store, tmp_path, _png(64, 64))
    assert await _adopt(store, tmp_path, batch_id, on_mismatch="fail") == 1
    row = await job_row(store, job_id)
    assert (row.state, row.last_outcome) == (JobState.FAILED, Outcome.OK.value)
    assert row.last_error == "image 0: asked for 1024x1024, got 64x64"
    [attempt] = await attempt_rows(store, job_id)
    assert (attempt.outcome, attempt.charge_status) == ("ok", "charged")
    assert (await store.recorded_paths([batch_id])) == {output_path(batch_id, job_id, 0, "png")}


class _FinishingMeanwhile:
    """The store, with a live worker's finish committed between adoption's listing of the
    recorded outputs and its reading of the jobs (the window a live worker can hit)."""

    def __init__(self, store: Store, finish: Callable[[], Awaitable[None]]) -> None:
        self._store = store
        self._finish = finish

    async def recorded_paths(self, batch_ids: Sequence[str]) -> set[str]:
        return await self._store.recorded_paths(batch_ids)

    async def jobs_for_files(self, job_ids: Sequence[int]) -> Mapping[int, JobFiles]:
        await self._finish()
        return await self._store.jobs_for_files(job_ids)

    async def adopt(
        self,
        job_id: int,
        attempt_id: str,
        files: Sequence[OutputRecord],
        expected_usd: float,
        *,
        refused: str | None = None,
    ) -> bool:
        return await self._store.adopt(job_id, attempt_id, files, expected_usd, refused=refused)


async def test_an_image_its_live_worker_records_meanwhile_is_kept(
    store: Store, tmp_path: Path
) -> None:
    """Another process adopts orphans while a live worker, its image written, records it:
    the image is the job's output, never removed as a leftover."""
    batch = (await submit(store, "live", specs(1), route=ROUTE)).batch
    [job] = await claim_all(store, batch.id, "live")
    start = start_of(job, "live")
    await store.start_attempt(start)
    relative = output_path(batch.id, job.id, 0, "png")
    image = _png(1024, 1024)
    (tmp_path / relative).parent.mkdir(parents=True)
    (tmp_path / relative).write_bytes(image)
    name = parse_output_name(batch.id, (tmp_path / relative).name)
    assert name is not None
    record = output_record(
        name,
        inspect_image(image),
        sha256="0" * 64,
        size=len(image),
        attempt_id=start.id,
        worker_id="live",
        mismatch=None,
    )

    async def finish() -> None:
        await store.complete(result_of(start, Outcome.OK), [record])

    catalog = load_catalog({}, environ={})
    racing = _FinishingMeanwhile(store, finish)
    report = await adopt_orphans(racing, tmp_path, [batch], catalog, load_price_book())

    assert report.removed_files == 0
    assert (tmp_path / relative).read_bytes() == image
    assert (await job_row(store, job.id)).state == JobState.SUCCEEDED
    assert await store.recorded_paths([batch.id]) == {relative}
