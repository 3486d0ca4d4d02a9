"""Index-only layouts (JSONL, CSV, Parquet), each read back with its own reader."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from runner.export import export_batch
from runner.export import parquet as parquet_module
from runner.export.rows import COLUMNS

from .builders import Sample

pytestmark = pytest.mark.anyio


async def export(sample: Sample, out: Path, fmt: str, **options: Any) -> None:
    await export_batch(
        sample.store,
        sample.batch,
        data_dir=sample.data_dir,
        out_dir=out,
        formats=[fmt],
        **options,
    )


def key_facts(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(r["id"], r["k"], r["sha256"], r["path"], r["metadata"]) for r in rows]


async def test_jsonl_index_round_trips(sample: Sample, out: Path) -> None:
    await export(sample, out, "jsonl")

    lines = (out / "pets.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]

    assert key_facts(rows) == key_facts(sample.truth())
    assert all(list(r) == list(COLUMNS) for r in rows)
    assert rows[0]["metadata"] == {"sku": "SKU-1", "tags": ["cat", "ü"]}
    assert "ü" in lines[0]  # UTF-8 text, not \\u escapes
    assert not (out / "pets").exists()  # the index alone: no images copied


async def test_jsonl_include_failed_adds_the_last_outcome_and_error(
    sample: Sample, out: Path
) -> None:
    await export(sample, out, "jsonl", include_failed=True)

    rows = [json.loads(x) for x in (out / "pets.jsonl").read_text().splitlines()]

    assert [(r["id"], r["status"], r["outcome"], r["error"]) for r in rows[6:]] == [
        ("broken", "failed", "invalid_request", "Invalid size <b>9x9</b> (request id: gw-123)"),
        ("limbo", "unknown", "lost", None),
    ]
    assert rows[6]["metadata"] == {"sku": "SKU-5"}


async def test_csv_index_round_trips_with_metadata_as_a_json_column(
    sample: Sample, out: Path
) -> None:
    await export(sample, out, "csv", include_failed=True)

    with open(out / "pets.csv", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows: list[dict[str, Any]] = list(reader)
    assert tuple(reader.fieldnames or ()) == COLUMNS

    for row in rows:
        row["metadata"] = json.loads(row["metadata"])
        row["k"] = int(row["k"]) if row["k"] else None
        row["sha256"] = row["sha256"] or None
        row["path"] = row["path"] or None
    assert key_facts(rows[:6]) == key_facts(sample.truth())
    assert json.loads(rows[1]["parameters"]) == {"size": "1024x1024", "n": 3}
    failed = rows[6]
    assert (failed["id"], failed["status"], failed["sha256"], failed["width"]) == (
        "broken",
        "failed",
        None,
        "",
    )
    assert failed["error"] == "Invalid size <b>9x9</b> (request id: gw-123)"


async def test_parquet_index_round_trips_with_typed_columns(sample: Sample, out: Path) -> None:
    await export(sample, out, "parquet", include_failed=True)

    table = pq.read_table(out / "pets.parquet")
    rows = table.to_pylist()

    assert table.schema.names == list(COLUMNS)
    assert str(table.schema.field("width").type) == "int32"
    assert str(table.schema.field("expected_usd").type) == "double"
    for row in rows:
        row["metadata"] = json.loads(row["metadata"])
    assert key_facts(rows[:6]) == key_facts(sample.truth())
    assert [(r["id"], r["status"], r["k"]) for r in rows[6:]] == [
        ("broken", "failed", None),
        ("limbo", "unknown", None),
    ]


async def test_parquet_embeds_the_image_bytes_in_several_row_groups(
    sample: Sample, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parquet_module, "ROW_GROUP_ROWS", 4)

    await export(sample, out, "parquet", embed=True, include_failed=True)

    parquet = pq.ParquetFile(out / "pets.parquet")
    rows = parquet.read().to_pylist()
    # A row group closes once it holds ROW_GROUP_ROWS: the outputs, then the failed jobs.
    assert [parquet.metadata.row_group(i).num_rows for i in range(2)] == [6, 2]
    assert [hashlib.sha256(r["image"]).hexdigest() for r in rows[:6]] == [
        t["sha256"] for t in sample.truth()
    ]
    assert [r["image"] for r in rows[6:]] == [None, None]
    image = (sample.data_dir / rows[0]["path"]).read_bytes()
    assert rows[0]["image"] == image
