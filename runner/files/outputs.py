"""The record of one output image on disk, built in one place for every way a file is kept."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from runner.files.images import ImageInfo, Mismatch
from runner.files.layout import OutputName
from runner.models import utcnow


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputRecord:
    """One image file of a job, as the ``outputs`` table holds it."""

    job_id: int
    batch_id: str
    attempt_id: str
    k: int
    #: Relative to the data directory (see :mod:`runner.files.layout`).
    path: str
    sha256: str
    width: int
    height: int
    format: str
    bytes: int
    worker_id: str | None
    created_at: datetime
    #: What the job asked for and what came, where they differ (see :class:`Mismatch`);
    #: both ``None`` when the image is what was asked for.
    asked: str | None = None
    got: str | None = None

    @property
    def mismatch(self) -> Mismatch | None:
        """How the image differs from what was asked, if it does."""
        if self.asked is None or self.got is None:
            return None
        return Mismatch(asked=self.asked, got=self.got)


def output_record(
    name: OutputName,
    info: ImageInfo,
    *,
    sha256: str,
    size: int,
    attempt_id: str,
    worker_id: str | None,
    mismatch: Mismatch | None = None,
) -> OutputRecord:
    """The record of the image ``name`` (verified as ``info``) that ``attempt_id`` returned.

    Args:
        name: where the file is.
        info: what inspection found in it.
        sha256: the hex digest of its bytes.
        size: its length in bytes.
        attempt_id: the attempt whose response carried it.
        worker_id: the worker that wrote it; ``None`` when adopted after a crash.
        mismatch: how it differs from what the job asked for, if it does.
    """
    return OutputRecord(
        job_id=name.job_id,
        batch_id=name.batch_id,
        attempt_id=attempt_id,
        k=name.k,
        path=name.path,
        sha256=sha256,
        width=info.width,
        height=info.height,
        format=info.format,
        bytes=size,
        worker_id=worker_id,
        created_at=utcnow(),
        asked=mismatch.asked if mismatch else None,
        got=mismatch.got if mismatch else None,
    )


def mismatch_summary(records: Sequence[OutputRecord]) -> str | None:
    """One line naming every image that is not what was asked for; ``None`` when all are."""
    parts = [f"image {r.k}: {m}" for r in records if (m := r.mismatch) is not None]
    return "; ".join(parts) if parts else None
