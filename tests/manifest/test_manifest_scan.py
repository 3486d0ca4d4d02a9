"""scan_manifest streams; check_manifest summarises, caps the problem list and counts the rest."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.errors import Problem, ValidationFailed
from runner.manifest import check_manifest, scan_manifest
from runner.manifest.keys import job_digest
from runner.models import JobSpec
from runner.routes import Catalog
from tests.manifest.manifest_helpers import image_bytes, write_jsonl


def test_check_report_counts_jobs_edits_and_problems(tmp_path: Path, catalog: Catalog) -> None:
    (tmp_path / "a.png").write_bytes(image_bytes())
    rows = [{"prompt": "g"}, {"prompt": "e", "images": ["a.png"]}, {"prompt": ""}]
    report = check_manifest(write_jsonl(tmp_path / "m.jsonl", rows), catalog.get("openai"), catalog)
    assert (report.jobs, report.edits, report.truncated) == (2, 1, 0)
    assert [(p.line, p.field) for p in report.problems] == [(3, "prompt")]
    assert not report.ok
    with pytest.raises(ValidationFailed) as failed:
        report.raise_for_problems()
    assert failed.value.problems == report.problems


def test_problems_beyond_the_cap_are_counted(tmp_path: Path, catalog: Catalog) -> None:
    rows = [{"prompt": f"p{i}", "n": 0, "quality": "ultra"} for i in range(30)]
    path = write_jsonl(tmp_path / "m.jsonl", [*rows, {"prompt": "ok"}])
    report = check_manifest(path, catalog.get("openai"), catalog, max_problems=25)
    assert len(report.problems) == 25
    assert report.truncated == 35
    assert report.jobs == 1
    assert report.problems[-1].line == 13


def test_clean_manifest_report_is_ok(tmp_path: Path, catalog: Catalog) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", [{"prompt": "p"}])
    report = check_manifest(path, catalog.get("sandbox"), catalog)
    assert report.ok
    report.raise_for_problems()


def test_thousand_line_manifest_streams_through_a_generator(
    tmp_path: Path, catalog: Catalog
) -> None:
    rows = [{"prompt": f"product {i}", "size": "1024x1024"} for i in range(1000)]
    path = write_jsonl(tmp_path / "m.jsonl", rows)
    items = scan_manifest(path, catalog.get("openai"), catalog)
    assert isinstance(items, Iterator)
    first = next(items)
    assert isinstance(first, JobSpec)
    assert first.line == 1
    assert sum(1 for item in items if isinstance(item, JobSpec)) == 999


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_jobs_arrive_before_the_manifest_ends(tmp_path: Path, catalog: Catalog) -> None:
    """Fed through a pipe, the first job is yielded while the writer still holds the rest:
    nothing waits for the whole file."""
    path = tmp_path / "pipe.jsonl"
    os.mkfifo(path)
    first_seen = threading.Event()

    def writer() -> None:
        with path.open("w", encoding="utf-8") as pipe:
            pipe.write('{"prompt": "line 1"}\n')
            pipe.flush()
            if first_seen.wait(timeout=10):
                pipe.writelines(f'{{"prompt": "line {i}"}}\n' for i in range(2, 1001))

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    items = scan_manifest(path, catalog.get("openai"), catalog)
    first = next(items)
    assert isinstance(first, JobSpec)
    assert first.prompt == "line 1"
    first_seen.set()
    rest = [item for item in items if not isinstance(item, Problem)]
    thread.join(timeout=10)
    assert len(rest) == 999


def test_a_key_seed_keys_the_jobs_apart_and_no_seed_keeps_the_plain_key(
    tmp_path: Path, catalog: Catalog
) -> None:
    """A comparison's jobs (seeded by its name) never share keys with ordinary submits of the
    same lines; the same seed gives the same keys (re-running adds nothing); no seed is the
    plain ``job_digest`` key, so ordinary batches keep their keys."""
    path = write_jsonl(tmp_path / "m.jsonl", [{"prompt": "a"}, {"prompt": "b", "id": "x"}])
    route = catalog.get("openai")

    def keys(seed: str | None) -> list[str]:
        return [
            i.key
            for i in scan_manifest(path, route, catalog, key_seed=seed)
            if isinstance(i, JobSpec)
        ]

    plain = keys(None)
    assert plain == [
        job_digest(
            route="openai", model=route.model, prompt=p, params={}, images=[], mask=None,
            explicit_id=e,
        ).hex()
        for p, e in (("a", None), ("b", "x"))
    ]  # fmt: skip
    cmp = keys("cmp")
    assert cmp == keys("cmp")
    assert len(set(plain + cmp + keys("other") + keys(""))) == 8
