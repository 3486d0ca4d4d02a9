"""The ``files`` layout: named image copies plus ``results.jsonl``, idempotent re-export."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from runner.export import ExportReport, Renamed, export_batch

from .builders import Sample, build_sample, succeed

pytestmark = pytest.mark.anyio

ALL_FORMATS = ["files", "jsonl", "csv", "parquet", "webdataset", "html"]


async def export(sample: Sample, out: Path, **options: Any) -> ExportReport:
    options.setdefault("formats", ["files"])
    return await export_batch(
        sample.store, sample.batch, data_dir=sample.data_dir, out_dir=out, **options
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its inode and mtime: a rewrite changes one of them."""
    return {
        str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


async def test_files_and_results_round_trip_against_the_database(sample: Sample, out: Path) -> None:
    report = await export(sample, out)

    folder = out / "pets"
    rows = read_jsonl(folder / "results.jsonl")
    truth = sample.truth()
    assert [(r["id"], r["k"], r["sha256"], r["metadata"]) for r in rows] == [
        (t["id"], t["k"], t["sha256"], t["metadata"]) for t in truth
    ]
    assert [r["file"] for r in rows] == [
        "cat-1.png",
        "dog-2-0.png",
        "dog-2-1.png",
        "dog-2-2.jpeg",
        "evil.png",
        "cat-dup.png",
    ]
    for row, fact in zip(rows, truth, strict=True):
        image = folder / row["file"]
        assert hashlib.sha256(image.read_bytes()).hexdigest() == fact["sha256"]
        with Image.open(image) as decoded:
            assert (decoded.width, decoded.height) == (row["width"], row["height"])
        assert (row["request_id"], row["provider_request_id"], row["gateway_request_id"]) == (
            fact["attempt_id"],
            fact["provider_request_id"],
            fact["gateway_request_id"],
        )
    assert report.formats["files"].written == 7  # six images and results.jsonl
    assert report.outputs == 6


async def test_results_rows_carry_prompt_route_parameters_and_cost(
    sample: Sample, out: Path
) -> None:
    await export(sample, out)

    cat = read_jsonl(out / "pets" / "results.jsonl")[0]

    assert cat["prompt"] == "a ginger cat on a windowsill"
    assert (cat["route"], cat["provider"], cat["model"]) == (
        "sandbox-laozhang",
        "laozhang",
        "gpt-image-2",
    )
    assert cat["parameters"] == {"size": "1024x1024"}
    assert (cat["attempts"], cat["expected_usd"], cat["charge_status"]) == (2, 0.03, "charged")
    assert cat["job_expected_usd"] == pytest.approx(0.04)
    assert (cat["status"], cat["outcome"], cat["error"], cat["index"]) == (
        "succeeded",
        "ok",
        None,
        1,
    )


async def test_metadata_template_sanitises_and_suffixes_collisions(
    sample: Sample, out: Path
) -> None:
    """{metadata.sku}: "../evil" stays inside the folder, the second SKU-1 becomes SKU-1-2."""
    report = await export(sample, out, name_template="{metadata.sku}")

    folder = out / "pets"
    assert sorted(p.name for p in folder.iterdir()) == [
        "SKU-1-2.png",
        "SKU-1.png",
        "SKU-2-0.png",
        "SKU-2-1.png",
        "SKU-2-2.jpeg",
        "_evil.png",
        "results.jsonl",
    ]
    assert sorted(p.name for p in out.iterdir()) == ["pets"]
    assert not list(out.parent.rglob("evil*"))
    files = report.formats["files"]
    assert files.renamed == (Renamed(id="cat-dup", k=0, wanted="SKU-1.png", used="SKU-1-2.png"),)
    assert files.renamed_total == 1
    by_file = {r["file"]: r for r in read_jsonl(folder / "results.jsonl")}
    assert (by_file["SKU-1.png"]["id"], by_file["SKU-1-2.png"]["id"]) == ("cat-1", "cat-dup")


async def test_reexport_rewrites_nothing(sample: Sample, out: Path) -> None:
    options: dict[str, Any] = {"formats": ALL_FORMATS, "include_failed": True, "embed": True}
    await export(sample, out, shard_size=2, **options)
    before = snapshot(out)

    again = await export(sample, out, shard_size=2, **options)

    assert snapshot(out) == before
    assert {name: rep.written for name, rep in again.formats.items()} == dict.fromkeys(
        ALL_FORMATS, 0
    )
    assert again.formats["files"].unchanged == 7
    assert not list(out.rglob(".tmp-*"))


async def test_reexport_of_a_grown_batch_copies_only_the_new_image(
    sample: Sample, out: Path
) -> None:
    await export(sample, out)
    before = snapshot(out / "pets")
    # The queued job "later" runs now.
    [later] = await sample.store.claim(
        worker_id="w1", batch_ids=[sample.batch.id], limit=1, lease_seconds=60
    )
    await succeed(sample.store, sample.data_dir, later, [(8, 8, "PNG")])

    report = await export(sample, out)

    files = report.formats["files"]
    assert (files.written, files.unchanged) == (2, 6)  # later.png and results.jsonl
    after = snapshot(out / "pets")
    assert {k: v for k, v in after.items() if k in before and v != before[k]} == {
        "results.jsonl": after["results.jsonl"]
    }
    assert "later.png" in after


async def test_an_altered_export_file_is_restored(sample: Sample, out: Path) -> None:
    await export(sample, out)
    target = out / "pets" / "evil.png"
    target.write_bytes(b"not the image")

    report = await export(sample, out)

    assert report.formats["files"].written == 1
    [evil] = [t for t in sample.truth() if t["id"] == "evil"]
    assert hashlib.sha256(target.read_bytes()).hexdigest() == evil["sha256"]


async def test_a_missing_or_altered_source_image_is_skipped_and_reported(
    sample: Sample, out: Path
) -> None:
    truth = sample.truth()
    (sample.data_dir / truth[0]["path"]).unlink()
    (sample.data_dir / truth[1]["path"]).write_bytes(b"corrupted")

    report = await export(sample, out)

    files = report.formats["files"]
    assert files.skipped == 2
    assert [(s.id, s.k) for s in files.skips] == [("cat-1", 0), ("dog-2", 0)]
    assert "missing" in files.skips[0].reason
    assert "does not match" in files.skips[1].reason
    rows = read_jsonl(out / "pets" / "results.jsonl")
    assert [r["file"] for r in rows[:2]] == [None, None]
    assert not (out / "pets" / "cat-1.png").exists()
    assert not (out / "pets" / "dog-2-0.png").exists()


async def test_include_failed_adds_failed_and_unknown_jobs_to_results(
    sample: Sample, out: Path
) -> None:
    await export(sample, out, include_failed=True)

    rows = read_jsonl(out / "pets" / "results.jsonl")

    assert [(r["id"], r["status"], r["outcome"]) for r in rows[6:]] == [
        ("broken", "failed", "invalid_request"),
        ("limbo", "unknown", "lost"),
    ]
    assert rows[6]["error"] == "Invalid size <b>9x9</b> (request id: gw-123)"
    assert (rows[6]["file"], rows[6]["sha256"], rows[6]["index"]) == (None, None, 5)


async def test_two_batches_export_side_by_side(sample: Sample, out: Path) -> None:
    other = await build_sample(sample.store, sample.data_dir, name="pets/../v2")

    await export(sample, out)
    await export_batch(
        sample.store, other, data_dir=sample.data_dir, out_dir=out, formats=["files"]
    )

    assert sorted(p.name for p in out.iterdir()) == ["pets", "pets_._v2"]
    assert len(read_jsonl(out / "pets_._v2" / "results.jsonl")) == 6
