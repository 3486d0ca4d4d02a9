"""What every export format implements, and the context they share.

A format is a :class:`Sink`: it is fed pages of rows, in id order, and finishes with a
report. Sinks are plain blocking code; :func:`runner.export.export_batch` runs each call in
a worker thread, so a sink is never called from two threads at once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from runner.export.naming import NameTemplate
from runner.export.report import FormatReport, Skipped, Tally
from runner.export.staging import SourceError
from runner.store.exports import ExportJob, ExportOutput
from runner.store.records import BatchInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportContext:
    """Settings of one export, shared by its formats."""

    batch: BatchInfo
    data_dir: Path
    out_dir: Path
    #: The batch name made safe as a file name: ``OUT/<stem>/``, ``OUT/<stem>.jsonl``…
    stem: str
    template: NameTemplate
    include_failed: bool
    embed: bool
    shard_size: int
    #: The ``files`` layout is exported too: the gallery can link to the full images.
    with_files: bool

    @property
    def folder(self) -> Path:
        """``OUT/<batch>/``, home of the ``files`` layout and the gallery."""
        return self.out_dir / self.stem

    def source(self, row: ExportOutput) -> Path:
        """Where ``row``'s image is in the data directory.

        Raises:
            SourceError: the stored path would leave the data directory.
        """
        relative = os.path.normpath(row.path)
        if os.path.isabs(relative) or relative == ".." or relative.startswith(".." + os.sep):
            raise SourceError(f"output path leaves the data directory: {row.path!r}")
        return self.data_dir / relative


def skipped(row: ExportOutput, exc: SourceError) -> Skipped:
    return Skipped(id=row.ext_id, k=row.k, path=row.path, reason=str(exc))


class Sink(Protocol):
    """One export format being written."""

    #: Whether to feed this sink the batch's failed and unknown jobs.
    wants_failed: bool
    tally: Tally

    def write_outputs(self, rows: Sequence[ExportOutput]) -> None:
        """Export one page of outputs."""

    def write_failed(self, rows: Sequence[ExportJob]) -> None:
        """Export one page of failed/unknown jobs (after every output)."""

    def finish(self) -> FormatReport:
        """Put everything in place and report."""

    def abort(self) -> None:
        """Drop temporary files: the export failed or was cancelled."""
