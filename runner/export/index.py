"""Index-only layouts: ``OUT/<batch>.jsonl`` and ``OUT/<batch>.csv``.

CSV is flat: ``parameters`` and ``metadata`` are JSON-string columns, absent values empty.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from typing import Any

from runner.export.report import FormatReport, Tally
from runner.export.rows import COLUMNS, OBJECT_COLUMNS, index_row, json_line, json_text
from runner.export.sink import ExportContext
from runner.export.staging import StagedFile
from runner.store.exports import ExportJob, ExportOutput


class JsonlSink:
    """One JSON object per line, in the :data:`~runner.export.rows.COLUMNS` order."""

    def __init__(self, ctx: ExportContext) -> None:
        self.ctx = ctx
        self.wants_failed = ctx.include_failed
        self.staged = StagedFile(ctx.out_dir / f"{ctx.stem}.jsonl")
        self.tally = Tally("jsonl", paths=[self.staged.target])
        self._out = self.staged.text()

    def write_outputs(self, rows: Sequence[ExportOutput]) -> None:
        self.write_failed(rows)

    def write_failed(self, rows: Sequence[ExportJob]) -> None:
        self._out.writelines(json_line(index_row(r, self.ctx.batch)) for r in rows)

    def finish(self) -> FormatReport:
        self.tally.count(self.staged.commit())
        return self.tally.freeze()

    def abort(self) -> None:
        self.staged.discard()


class CsvSink:
    """A header row, then one row per output (and failed job)."""

    def __init__(self, ctx: ExportContext) -> None:
        self.ctx = ctx
        self.wants_failed = ctx.include_failed
        self.staged = StagedFile(ctx.out_dir / f"{ctx.stem}.csv")
        self.tally = Tally("csv", paths=[self.staged.target])
        self._writer = csv.writer(self.staged.text(), lineterminator="\r\n")
        self._writer.writerow(COLUMNS)

    def write_outputs(self, rows: Sequence[ExportOutput]) -> None:
        self.write_failed(rows)

    def write_failed(self, rows: Sequence[ExportJob]) -> None:
        self._writer.writerows(_flat(index_row(r, self.ctx.batch)) for r in rows)

    def finish(self) -> FormatReport:
        self.tally.count(self.staged.commit())
        return self.tally.freeze()

    def abort(self) -> None:
        self.staged.discard()


def _flat(row: dict[str, Any]) -> list[Any]:
    for name in OBJECT_COLUMNS:
        row[name] = json_text(row[name])
    return ["" if row[c] is None else row[c] for c in COLUMNS]
