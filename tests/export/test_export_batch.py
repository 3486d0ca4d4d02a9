"""``export_batch`` itself: argument errors, progress, several formats at once, clean failure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from runner.errors import UsageError
from runner.export import FORMATS, export_batch

from .builders import Sample, spec, succeed

pytestmark = pytest.mark.anyio


async def export(sample: Sample, out: Path, **options: Any) -> Any:
    options.setdefault("data_dir", sample.data_dir)
    return await export_batch(sample.store, sample.batch, out_dir=out, **options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"formats": ["zip"]}, "unknown export format 'zip'; choose from files, jsonl"),
        ({"formats": []}, "unknown export format"),
        ({"formats": ["webdataset"], "shard_size": 0}, "shard size must be at least 1"),
        ({"formats": ["files"], "name_template": "{sku}"}, "unknown field"),
    ],
)
async def test_bad_arguments_are_usage_errors_before_anything_is_written(
    sample: Sample, out: Path, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        await export(sample, out, **options)

    assert not (out).exists()


async def test_a_missing_data_directory_stops_formats_that_read_images(
    sample: Sample, out: Path
) -> None:
    nowhere = out / "nowhere"
    with pytest.raises(UsageError, match="data directory not found"):
        await export(sample, out, formats=["files"], data_dir=nowhere)

    # The index alone needs no image.
    report = await export(sample, out, formats=["jsonl", "csv"], data_dir=nowhere)
    assert report.formats["jsonl"].written == 1


async def test_every_format_in_one_pass_with_progress(sample: Sample, out: Path) -> None:
    seen: list[tuple[int, int]] = []

    report = await export(
        sample,
        out,
        formats=list(FORMATS),
        include_failed=True,
        progress=lambda done, total: seen.append((done, total)),
    )

    assert list(report.formats) == list(FORMATS)
    assert (report.outputs, report.failed) == (6, 2)
    assert seen[0] == (0, 8)
    assert seen[-1] == (8, 8)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert sorted(p.name for p in out.iterdir()) == [
        "pets",
        "pets-000000.tar",
        "pets.csv",
        "pets.jsonl",
        "pets.parquet",
    ]
    assert report.to_json()["formats"]["files"]["written"] == 7


async def test_the_gallery_alone_still_reads_failed_jobs(sample: Sample, out: Path) -> None:
    seen: list[tuple[int, int]] = []

    report = await export(
        sample, out, formats=["jsonl", "html"], progress=lambda d, t: seen.append((d, t))
    )

    assert (report.outputs, report.failed) == (6, 2)
    assert seen[-1] == (8, 8)
    # ...but the index, without include_failed, has the outputs only.
    assert len((out / "pets.jsonl").read_text().splitlines()) == 6


async def test_a_failed_export_leaves_no_temporary_or_partial_files(
    sample: Sample, out: Path
) -> None:
    def explode(done: int, total: int) -> None:
        if done:
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        await export(sample, out, formats=list(FORMATS), progress=explode)

    leftovers = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    # Images copied before the failure are complete and stay; no index or shard is in place.
    assert not [p for p in leftovers if ".tmp-" in p]
    assert not [p for p in leftovers if p.endswith((".jsonl", ".csv", ".parquet", ".tar", ".html"))]


async def test_a_cancelled_export_cleans_up_too(sample: Sample, out: Path) -> None:
    with anyio.move_on_after(5) as scope:

        def cancel(done: int, total: int) -> None:
            scope.cancel()

        await export(sample, out, formats=list(FORMATS), progress=cancel)

    assert scope.cancelled_caught
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


async def test_a_batch_with_no_output_yet_exports_empty_indexes(sample: Sample, out: Path) -> None:
    fresh = await sample.store.submit(
        name="fresh",
        route="sandbox-laozhang",
        manifest="/jobs/fresh.jsonl",
        manifest_sha256="1" * 64,
        route_snapshot={},
        budget_usd=None,
        specs=[spec(1, "only", "queued, never run", {})],
    )

    report = await export_batch(
        sample.store,
        fresh.batch,
        data_dir=sample.data_dir,
        out_dir=out,
        formats=list(FORMATS),
        include_failed=True,
    )

    assert (report.outputs, report.failed) == (0, 0)
    assert (out / "fresh.jsonl").read_text() == ""
    assert (out / "fresh" / "results.jsonl").read_text() == ""
    assert report.formats["webdataset"].paths == ()
    assert "<article" not in (out / "fresh" / "index.html").read_text()


async def test_line_separators_in_prompts_do_not_split_jsonl_records(
    sample: Sample, out: Path
) -> None:
    fresh = await sample.store.submit(
        name="seps",
        route="sandbox-laozhang",
        manifest="/jobs/seps.jsonl",
        manifest_sha256="2" * 64,
        route_snapshot={},
        budget_usd=None,
        specs=[spec(1, "sep", "one\u2028two\u2029three\nfour", {})],
    )
    [job] = await sample.store.claim(
        worker_id="w1", batch_ids=[fresh.batch.id], limit=1, lease_seconds=60
    )
    await succeed(sample.store, sample.data_dir, job, [(4, 4, "PNG")])

    await export_batch(
        sample.store, fresh.batch, data_dir=sample.data_dir, out_dir=out, formats=["jsonl"]
    )

    [line] = (out / "seps.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(line)["prompt"] == "one\u2028two\u2029three\nfour"
