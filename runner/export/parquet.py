"""The ``parquet`` layout: ``OUT/<batch>.parquet``, the index with an optional ``image`` column.

Rows are buffered into row groups of at most :data:`ROW_GROUP_ROWS` rows or
:data:`ROW_GROUP_BYTES` of embedded images, whichever comes first, and streamed out with a
``ParquetWriter``: memory stays bounded however large the batch. ``parameters`` and
``metadata`` are JSON strings (free-form objects have no single Arrow type).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from runner.export.report import FormatReport, Tally
from runner.export.rows import COLUMNS, OBJECT_COLUMNS, index_row, json_text
from runner.export.sink import ExportContext, skipped
from runner.export.staging import SourceError, StagedFile, read_verified
from runner.store.exports import ExportJob, ExportOutput

ROW_GROUP_ROWS = 10_000
ROW_GROUP_BYTES = 64 << 20

_TYPES: dict[str, pa.DataType] = {
    "index": pa.int64(),
    "k": pa.int32(),
    "width": pa.int32(),
    "height": pa.int32(),
    "bytes": pa.int64(),
    "attempts": pa.int32(),
    "expected_usd": pa.float64(),
    "observed_usd": pa.float64(),
    "job_expected_usd": pa.float64(),
    "job_observed_usd": pa.float64(),
    "edit_fidelity": pa.float64(),
}


def schema(embed: bool) -> pa.Schema:
    """The Arrow schema of the index (every column nullable; strings unless typed)."""
    fields = [pa.field(name, _TYPES.get(name, pa.string())) for name in COLUMNS]
    if embed:
        fields.append(pa.field("image", pa.binary()))
    return pa.schema(fields)


class ParquetSink:
    """Streams index rows (and optionally image bytes) into one Parquet file."""

    def __init__(self, ctx: ExportContext) -> None:
        self.ctx = ctx
        self.wants_failed = ctx.include_failed
        self.schema = schema(ctx.embed)
        self.staged = StagedFile(ctx.out_dir / f"{ctx.stem}.parquet")
        self.tally = Tally("parquet", paths=[self.staged.target])
        self._writer = pq.ParquetWriter(str(self.staged.temp), self.schema, compression="zstd")
        # Pages are converted to Arrow at once (compact columns, not dicts) until a row
        # group's worth has gathered.
        self._batches: list[pa.RecordBatch] = []
        self._rows = self._bytes = 0

    def write_outputs(self, rows: Sequence[ExportOutput]) -> None:
        records = []
        for row in rows:
            record = self._record(row)
            if self.ctx.embed:
                try:
                    record["image"] = read_verified(self.ctx.source(row), row.sha256)
                    self._bytes += row.bytes
                except SourceError as exc:
                    self.tally.skip(skipped(row, exc))
            records.append(record)
        self._add(records)

    def write_failed(self, rows: Sequence[ExportJob]) -> None:
        self._add([self._record(row) for row in rows])

    def _record(self, row: ExportJob) -> dict[str, Any]:
        record = index_row(row, self.ctx.batch)
        for name in OBJECT_COLUMNS:
            record[name] = json_text(record[name])
        return record

    def _add(self, records: list[dict[str, Any]]) -> None:
        self._batches.append(pa.RecordBatch.from_pylist(records, schema=self.schema))
        self._rows += len(records)
        if self._rows >= ROW_GROUP_ROWS or self._bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            table = pa.Table.from_batches(self._batches, schema=self.schema)
            self._writer.write_table(table, row_group_size=max(self._rows, 1))
        self._batches, self._rows, self._bytes = [], 0, 0

    def finish(self) -> FormatReport:
        self._flush()
        self._writer.close()
        self.tally.count(self.staged.commit())
        return self.tally.freeze()

    def abort(self) -> None:
        self._batches = []
        try:
            self._writer.close()
        finally:
            self.staged.discard()
