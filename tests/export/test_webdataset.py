"""WebDataset shards: readable by the ``webdataset`` library, sized, keyed, reproducible."""

from __future__ import annotations

import gc
import hashlib
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
import webdataset as wds

from runner.export import ExportReport, export_batch

from .builders import Sample

pytestmark = pytest.mark.anyio


async def export(sample: Sample, out: Path, **options: Any) -> ExportReport:
    return await export_batch(
        sample.store,
        sample.batch,
        data_dir=sample.data_dir,
        out_dir=out,
        formats=["webdataset"],
        **options,
    )


def shards(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("pets-*.tar"))


# The webdataset library leaves closing its shard files to the garbage collector.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_shards_read_back_with_the_webdataset_library(sample: Sample, out: Path) -> None:
    await export(sample, out, shard_size=4)

    assert shards(out) == ["pets-000000.tar", "pets-000001.tar"]
    urls = [str(out / name) for name in shards(out)]
    samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
    gc.collect()  # here, where its unclosed-file warnings are ignored

    truth = sample.truth()
    assert [s["__key__"] for s in samples] == [
        "cat-1",
        "dog-2-0",
        "dog-2-1",
        "dog-2-2",
        "evil",
        "cat-dup",
    ]
    for got, fact in zip(samples, truth, strict=True):
        index = json.loads(got["json"])
        image = got.get("png", got.get("jpeg"))
        assert hashlib.sha256(image).hexdigest() == fact["sha256"] == index["sha256"]
        assert (index["id"], index["k"], index["metadata"]) == (
            fact["id"],
            fact["k"],
            fact["metadata"],
        )


async def test_each_sample_is_its_image_then_its_json(sample: Sample, out: Path) -> None:
    await export(sample, out, shard_size=1000)

    with tarfile.open(out / "pets-000000.tar") as tar:
        names = tar.getnames()
        members = tar.getmembers()

    assert names[:4] == ["cat-1.png", "cat-1.json", "dog-2-0.png", "dog-2-0.json"]
    assert names[6:8] == ["dog-2-2.jpeg", "dog-2-2.json"]
    assert len(names) == 12
    assert {(m.uid, m.gid, m.uname, m.mode) for m in members} == {(0, 0, "", 0o644)}


async def test_keys_never_contain_dots(sample: Sample, out: Path) -> None:
    """WebDataset cuts the key at the first dot, so dots in names become underscores."""
    await export(sample, out, name_template="v1.{id}.{k}")

    with tarfile.open(out / "pets-000000.tar") as tar:
        names = tar.getnames()

    assert names[:2] == ["v1_cat-1_0.png", "v1_cat-1_0.json"]


async def test_fewer_shards_on_reexport_removes_the_surplus(sample: Sample, out: Path) -> None:
    await export(sample, out, shard_size=2)
    assert len(shards(out)) == 3

    report = await export(sample, out, shard_size=3)

    assert shards(out) == ["pets-000000.tar", "pets-000001.tar"]
    assert report.formats["webdataset"].removed == (out / "pets-000002.tar",)
    assert report.formats["webdataset"].written == 2


async def test_failed_jobs_are_not_samples(sample: Sample, out: Path) -> None:
    report = await export(sample, out, include_failed=True)

    with tarfile.open(out / "pets-000000.tar") as tar:
        keys = {name.split(".")[0] for name in tar.getnames()}

    assert "broken" not in keys
    assert len(keys) == 6
    assert report.formats["webdataset"].skipped == 0
