"""Source images: local files, URLs, data URLs; checked as images, hashed, read once."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest

from runner.manifest.sources import SourceResolver
from runner.models import SourceImage
from tests.manifest.manifest_helpers import Scan, image_bytes, where, write_jsonl

P = "edit this"


def _data_url(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64,{base64.b64encode(data).decode()}"


def test_local_sources_resolve_relative_to_the_manifest_folder(tmp_path: Path, scan: Scan) -> None:
    png, jpeg, webp = image_bytes("PNG"), image_bytes("JPEG"), image_bytes("WEBP")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.png").write_bytes(png)
    (tmp_path / "b.jpg").write_bytes(jpeg)
    (tmp_path / "c.webp").write_bytes(webp)
    (tmp_path / "jobs").mkdir()
    rows = [{"prompt": P, "images": ["../src/a.png", str(tmp_path / "b.jpg"), "./../c.webp"]}]
    jobs, problems = scan(write_jsonl(tmp_path / "jobs" / "m.jsonl", rows))
    assert problems == []
    assert jobs[0].images == (
        SourceImage(
            kind="path", ref=str(tmp_path / "src" / "a.png"), sha256=hashlib.sha256(png).hexdigest()
        ),
        SourceImage(
            kind="path", ref=str(tmp_path / "b.jpg"), sha256=hashlib.sha256(jpeg).hexdigest()
        ),
        SourceImage(
            kind="path", ref=str(tmp_path / "c.webp"), sha256=hashlib.sha256(webp).hexdigest()
        ),
    )
    assert jobs[0].is_edit


def test_unusable_local_sources(tmp_path: Path, scan: Scan) -> None:
    """Missing, a directory, not an image, a damaged image, a format the API refuses."""
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "notes.png").write_text("this is text, not an image")
    (tmp_path / "cut.png").write_bytes(image_bytes("PNG", size=(300, 300))[:-40])
    (tmp_path / "anim.gif").write_bytes(image_bytes("GIF"))
    (tmp_path / "empty.png").write_bytes(b"")
    refs = ["missing.png", "folder.png", "notes.png", "cut.png", "anim.gif", "empty.png"]
    rows = [{"prompt": f"{P} {i}", "images": [ref]} for i, ref in enumerate(refs)]
    jobs, problems = scan(write_jsonl(tmp_path / "m.jsonl", rows))
    assert jobs == []
    assert where(problems) == [(line, "images") for line in range(1, 7)]
    messages = [p.message for p in problems]
    assert messages[0] == f"missing.png: file not found ({tmp_path / 'missing.png'})"
    assert "is a directory" in messages[1]
    assert "not an image" in messages[2]
    assert "damaged image" in messages[3]
    assert "GIF images are not accepted; use PNG, JPEG or WebP" in messages[4]
    assert "empty file" in messages[5]


def test_unreadable_source_file(tmp_path: Path, scan: Scan) -> None:
    """chmod 000: reported as unreadable. Root reads it anyway, so the test skips there
    (the directory and non-image cases above cover unreadable sources for root)."""
    source = tmp_path / "locked.png"
    source.write_bytes(image_bytes())
    source.chmod(0)
    try:
        if os.access(source, os.R_OK):
            pytest.skip("running with privileges that read chmod 000 files (root)")
        _, problems = scan(
            write_jsonl(tmp_path / "m.jsonl", [{"prompt": P, "images": ["locked.png"]}])
        )
        assert where(problems) == [(1, "images")]
        assert "permission denied" in problems[0].message
    finally:
        source.chmod(0o600)


def test_urls_are_accepted_unfetched_and_checked_for_a_host(tmp_path: Path, scan: Scan) -> None:
    rows = [
        {"prompt": P, "images": ["https://cdn.example.com/a.png?v=2", "http://10.0.0.1:8080/b"]},
        {"prompt": P, "images": ["https:///nohost.png"]},
        {"prompt": P, "images": ["ftp://example.com/a.png"]},
        {"prompt": P, "images": ["file:///etc/passwd"]},
    ]
    jobs, problems = scan(write_jsonl(tmp_path / "m.jsonl", rows))
    assert jobs[0].images == (
        SourceImage(kind="url", ref="https://cdn.example.com/a.png?v=2", sha256=None),
        SourceImage(kind="url", ref="http://10.0.0.1:8080/b", sha256=None),
    )
    assert where(problems) == [(2, "images"), (3, "images"), (4, "images")]
    assert "URL has no host" in problems[0].message
    assert "unsupported scheme 'ftp'" in problems[1].message
    assert "unsupported scheme 'file'" in problems[2].message


def test_data_urls_are_decoded_checked_and_hashed(tmp_path: Path, scan: Scan) -> None:
    png = image_bytes("PNG")
    unpadded = _data_url(png).rstrip("=")
    rows = [
        {"prompt": P, "images": [_data_url(png)]},
        {"prompt": P + "2", "images": [unpadded]},
        {"prompt": P, "images": [_data_url(image_bytes("JPEG"), "image/jpg")]},
        {"prompt": P, "images": [_data_url(b"not an image")]},
        {"prompt": P, "images": ["data:image/png;base64,@@@@"]},
        {"prompt": P, "images": ["data:image/png,rawbytes"]},
        {"prompt": P, "images": [_data_url(png, "text/plain")]},
        {"prompt": P, "images": [_data_url(png, "image/jpeg")]},
        {"prompt": P, "images": ["data:image/png;base64"]},
    ]
    jobs, problems = scan(write_jsonl(tmp_path / "m.jsonl", rows))
    assert [job.line for job in jobs] == [1, 2, 3]
    assert jobs[0].images == (
        SourceImage(kind="data", ref=_data_url(png), sha256=hashlib.sha256(png).hexdigest()),
    )
    # Gateways drop base64 padding; the content (and so the hash) is the same.
    assert jobs[1].images[0].sha256 == jobs[0].images[0].sha256
    assert where(problems) == [(line, "images") for line in range(4, 10)]
    messages = [p.message for p in problems]
    assert "not an image" in messages[0]
    assert "not valid base64" in messages[1]
    assert "must be base64-encoded" in messages[2]
    assert "needs an image media type" in messages[3]
    assert "says image/jpeg but holds PNG data" in messages[4]
    assert "no ','" in messages[5]
    # Long data URLs are shortened in messages.
    assert all(len(m) < 200 for m in messages)


def test_a_shared_source_is_read_once(tmp_path: Path) -> None:
    """The second lookup of a path (under any spelling) comes from the cache: it still
    succeeds after the file is gone."""
    (tmp_path / "a.png").write_bytes(image_bytes())
    resolver = SourceResolver(str(tmp_path))
    first = resolver.resolve("a.png")
    (tmp_path / "a.png").unlink()
    assert resolver.resolve("a.png") == first
    assert resolver.resolve("./a.png") == first
    assert resolver.resolve(str(tmp_path / "a.png")) == first
    assert isinstance(SourceResolver(str(tmp_path)).resolve("a.png"), str)


def test_thousand_jobs_sharing_a_source(tmp_path: Path, scan: Scan) -> None:
    (tmp_path / "a.png").write_bytes(image_bytes())
    rows = [{"prompt": f"variant {i}", "images": ["a.png"]} for i in range(1000)]
    jobs, problems = scan(write_jsonl(tmp_path / "m.jsonl", rows))
    assert problems == []
    assert len({job.images[0].sha256 for job in jobs}) == 1
