"""Job keys and ids: stable across re-reads, unmoved by inserted lines, duplicates refused."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from runner.manifest import KEY_VERSION
from tests.manifest.manifest_helpers import Scan, image_bytes, where, write_jsonl


def test_key_follows_the_documented_recipe(tmp_path: Path, scan: Scan) -> None:
    """Pinned: changing the recipe would make re-submitted manifests enqueue twice."""
    png = image_bytes()
    (tmp_path / "a.png").write_bytes(png)
    rows = [
        {
            "prompt": "café ☕",
            "size": "1024x1024",
            "n": 2,
            "images": ["a.png", "https://x.test/b.png"],
            "metadata": {"ignored": True},
        },
        {"id": 12, "prompt": "p", "model": "gpt-image-1.5"},
    ]
    jobs, _ = scan(write_jsonl(tmp_path / "m.jsonl", rows))
    material = [
        KEY_VERSION,
        "openai",
        "gpt-image-2",
        "café ☕",
        {"n": 2, "size": "1024x1024"},
        [f"sha256:{hashlib.sha256(png).hexdigest()}", "url:https://x.test/b.png"],
        None,
        None,
    ]
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert jobs[0].key == hashlib.sha256(text.encode()).hexdigest()
    material = [KEY_VERSION, "openai", "gpt-image-1.5", "p", {}, [], None, "12"]
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert jobs[1].key == hashlib.sha256(text.encode()).hexdigest()


def test_keys_are_stable_across_rereads_and_folders(tmp_path: Path, scan: Scan) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "a.png").write_bytes(image_bytes())
    rows = [{"prompt": "p", "images": ["a.png"]}, {"prompt": "q", "id": "x", "n": 2}]
    path = write_jsonl(tmp_path / "one" / "m.jsonl", rows)
    first = [job.key for job in scan(path)[0]]
    assert first == [job.key for job in scan(path)[0]]
    moved = shutil.copytree(tmp_path / "one", tmp_path / "two")
    assert first == [job.key for job in scan(moved / "m.jsonl")[0]]


def test_inserting_a_line_keeps_keys_of_lines_without_ids(tmp_path: Path, scan: Scan) -> None:
    rows = [{"prompt": "a"}, {"prompt": "b", "size": "1024x1536"}, {"prompt": "c", "id": "c"}]
    before = scan(write_jsonl(tmp_path / "m.jsonl", rows))[0]
    after = scan(write_jsonl(tmp_path / "m.jsonl", [{"prompt": "new"}, *reversed(rows)]))[0]
    assert {job.prompt: job.key for job in before}.items() <= {
        job.prompt: job.key for job in after
    }.items()
    # The default id is the line number, so it moves; explicit ids do not.
    assert [(job.prompt, job.ext_id) for job in after] == [
        ("new", "1"),
        ("c", "c"),
        ("b", "3"),
        ("a", "4"),
    ]


def test_key_depends_on_route_content_and_explicit_id(tmp_path: Path, scan: Scan) -> None:
    (tmp_path / "a.png").write_bytes(image_bytes(size=(10, 10)))
    path = write_jsonl(tmp_path / "m.jsonl", [{"prompt": "p", "images": ["a.png"]}])
    base = scan(path)[0][0].key
    assert scan(path, "laozhang-official")[0][0].key != base
    (tmp_path / "a.png").write_bytes(image_bytes(size=(11, 10)))
    assert scan(path)[0][0].key != base
    with_id = write_jsonl(tmp_path / "n.jsonl", [{"prompt": "p", "id": 1}, {"prompt": "p"}])
    jobs, problems = scan(with_id)
    assert problems == []
    assert jobs[0].key != jobs[1].key


def test_duplicate_lines_are_refused_unless_they_have_ids(tmp_path: Path, scan: Scan) -> None:
    rows = [
        {"prompt": "same", "size": "1024x1024"},
        {"prompt": "other"},
        {"size": "1024x1024", "prompt": "same", "metadata": {"differs": "only here"}},
        {"prompt": "same", "size": "1024x1024", "id": "a"},
        {"prompt": "same", "size": "1024x1024", "id": "b"},
        {"prompt": "same", "size": "1024x1024"},
    ]
    jobs, problems = scan(write_jsonl(tmp_path / "m.jsonl", rows))
    assert where(problems) == [(3, ""), (6, "")]
    assert problems[0].message == "duplicate of line 1: give each line an id to run both"
    assert [job.line for job in jobs] == [1, 2, 4, 5]


def test_duplicate_explicit_ids(tmp_path: Path, scan: Scan) -> None:
    rows = [
        {"prompt": "a", "id": "sku-1"},
        {"prompt": "b", "id": 5},
        {"prompt": "c", "id": "5"},
        {"prompt": "d", "id": "sku-1"},
    ]
    jobs, problems = scan(write_jsonl(tmp_path / "m.jsonl", rows))
    assert where(problems) == [(3, "id"), (4, "id")]
    assert problems[0].message == "duplicate id, first used on line 2"
    assert problems[1].message == "duplicate id, first used on line 1"
    assert [job.ext_id for job in jobs] == ["sku-1", "5"]


def test_explicit_ids_must_not_take_a_default_id(tmp_path: Path, scan: Scan) -> None:
    """A line without id is named by its line number; an explicit id may not reuse it."""
    rows = [
        {"prompt": "a"},
        {"prompt": "b", "id": 1},
        {"prompt": "c", "id": "4"},
        {"prompt": "d"},
        {"prompt": "e", "id": "03"},
    ]
    jobs, problems = scan(write_jsonl(tmp_path / "m.jsonl", rows))
    assert where(problems) == [(2, "id"), (4, "id")]
    assert "line 1 has no id" in problems[0].message
    assert "which line 3 already uses as its id" in problems[1].message
    assert [job.ext_id for job in jobs] == ["1", "4", "03"]
