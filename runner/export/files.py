"""The ``files`` layout: ``OUT/<batch>/<name>.<ext>`` plus ``results.jsonl``.

Images are copied (never moved or linked: the data directory stays the source of truth) and
verified against their recorded sha256 on the way. An image already exported with the same
content is left alone (same size, then same hash), so re-exporting a grown batch copies only
the new outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePath

from runner.export.naming import Namer
from runner.export.report import FormatReport, Renamed, Tally
from runner.export.rows import index_row, json_line
from runner.export.sink import ExportContext, skipped
from runner.export.staging import SourceError, StagedFile, copy_verified
from runner.store.exports import ExportJob, ExportOutput

RESULTS = "results.jsonl"
COPY_THREADS = 4


def extension(row: ExportOutput) -> str:
    """The image's file extension, as in the data directory."""
    return PurePath(row.path).suffix.lstrip(".").lower() or row.format


class FilesSink:
    """Copies images under template names and writes their index beside them."""

    def __init__(self, ctx: ExportContext) -> None:
        self.ctx = ctx
        self.wants_failed = ctx.include_failed
        self.tally = Tally("files", paths=[ctx.folder])
        self.namer = Namer(ctx.template)
        self.results = StagedFile(ctx.folder / RESULTS)
        self._index = self.results.text()
        # Creating files is mostly waiting on the file system: overlap a few.
        self._pool = ThreadPoolExecutor(max_workers=COPY_THREADS)

    def write_outputs(self, rows: Sequence[ExportOutput]) -> None:
        for row in rows:
            name, wanted = self.namer.claim(row, extension(row))
            if wanted is not None:
                self.tally.rename(Renamed(id=row.ext_id, k=row.k, wanted=wanted, used=name))
            file: str | None = name
            try:
                source = self.ctx.source(row)
                self.tally.count(
                    copy_verified(source, self.ctx.folder / name, row.sha256, row.bytes)
                )
            except SourceError as exc:
                self.tally.skip(skipped(row, exc))
                file = None
            self._index.write(json_line({**index_row(row, self.ctx.batch), "file": file}))

    def write_failed(self, rows: Sequence[ExportJob]) -> None:
        for row in rows:
            self._index.write(json_line({**index_row(row, self.ctx.batch), "file": None}))

    def finish(self) -> FormatReport:
        self._pool.shutdown()
        self.tally.count(self.results.commit())
        return self.tally.freeze()

    def abort(self) -> None:
        self._pool.shutdown(cancel_futures=True)
        self.results.discard()
