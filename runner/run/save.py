"""Saving a paid answer's images: decode (or download), verify, write; nothing is recorded.

Every image that decodes is kept, whatever its size or format; where it differs from what
the job asked for, its record says so (``asked``, ``got``).
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio

from runner.errors import AttemptError
from runner.files.atomic import write_atomic
from runner.files.images import Expected, ImageError, check_expected, decode_b64, inspect_image
from runner.files.layout import OutputName
from runner.files.outputs import output_record
from runner.http.download import download
from runner.models import Job, Outcome
from runner.run.lane import Lane
from runner.shapes import ImagePayload
from runner.store import OutputRecord

MAX_OUTPUT_BYTES = 200 * 1024 * 1024
#: Images up to this size are verified and written on the event loop (see ``_save_one``).
INLINE_WRITE_BYTES = 32 * 1024
#: Make every image durable against power loss before recording it (slower; see write_atomic).
FSYNC = os.environ.get("IMAGERUN_FSYNC", "") not in ("", "0")


async def save_images(
    lane: Lane,
    job: Job,
    attempt_id: str,
    payloads: list[ImagePayload],
    deadline: float,
    *,
    data_dir: Path,
    worker_id: str,
) -> tuple[list[OutputRecord], list[AttemptError]]:
    """Decode (or download, within what is left of the attempt's deadline), verify and
    write each image of ``payloads`` under ``data_dir``. Returns the images written and why
    the others could not be."""
    expected = Expected.from_params(job.params)
    records: list[OutputRecord] = []
    problems: list[AttemptError] = []
    for k in range(len(payloads)):
        try:
            records.append(
                await _save_one(
                    lane, job, attempt_id, payloads, k, deadline, expected, data_dir, worker_id
                )
            )
        except AttemptError as exc:
            problems.append(exc)
    return records, problems


async def _save_one(
    lane: Lane,
    job: Job,
    attempt_id: str,
    payloads: list[ImagePayload],
    k: int,
    deadline: float,
    expected: Expected,
    data_dir: Path,
    worker_id: str,
) -> OutputRecord:
    # Taken out of the list, so this frame holds the only reference to its base64 text.
    payload, payloads[k] = payloads[k], _SPENT
    if payload.b64 is not None:
        try:
            data = decode_b64(payload.b64)
        except ImageError as exc:
            raise AttemptError(Outcome.BAD_RESPONSE, str(exc)) from exc
        del payload
    else:
        data = await download(
            lane.fetch, payload.url or "", limit=MAX_OUTPUT_BYTES, deadline=deadline
        )
    args = (job, attempt_id, k, data, expected, data_dir, worker_id)
    if len(data) <= INLINE_WRITE_BYTES:
        # Decoding and writing a thumbnail-sized image takes less time than the hop to
        # a worker thread and back; bigger images never block the event loop.
        return _write(*args)
    return await anyio.to_thread.run_sync(_write, *args)


def _write(
    job: Job,
    attempt_id: str,
    k: int,
    data: bytes,
    expected: Expected,
    data_dir: Path,
    worker_id: str,
) -> OutputRecord:
    try:
        info = inspect_image(data)
    except ImageError as exc:
        raise AttemptError(Outcome.BAD_RESPONSE, f"image does not decode: {exc}") from exc
    mismatch = check_expected(info, expected)
    name = OutputName(batch_id=job.batch_id, job_id=job.id, k=k, format=info.format)
    digest = write_atomic(os.path.join(data_dir, name.path), data, fsync=FSYNC)
    return output_record(
        name,
        info,
        sha256=digest,
        size=len(data),
        attempt_id=attempt_id,
        worker_id=worker_id,
        mismatch=mismatch,
    )


#: Stands in for a payload once its image has been written (so its base64 text can be freed).
_SPENT = ImagePayload()
