"""Hostile manifests: exit 1, every problem as ``FILE:LINE: field: message``, nothing enqueued."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import Invoke, status_json

NOT_AN_IMAGE = b"this is text, not a picture\n"

#: name → (file name, content, route, expected problems as (line, field-or-message start)).
CASES: dict[str, tuple[str, str, str, list[tuple[int, str]]]] = {
    "malformed-json": (
        "jobs.jsonl",
        '{"prompt": "a fine line"}\n{"prompt": "broken"\n',
        "laozhang",
        [(2, "invalid JSON")],
    ),
    "missing-prompt": ("jobs.jsonl", '{"id": "a"}\n', "laozhang", [(1, "prompt")]),
    "unknown-field": (
        "jobs.jsonl",
        '{"prompt": "x", "colour": "red"}\n',
        "laozhang",
        [(1, "colour")],
    ),
    "duplicate-id": (
        "jobs.jsonl",
        '{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n',
        "laozhang",
        [(2, "id")],
    ),
    "missing-source": (
        "jobs.jsonl",
        '{"prompt": "x", "images": ["nowhere.png"]}\n',
        "laozhang",
        [(1, "images")],
    ),
    "non-image-source": (
        "jobs.jsonl",
        '{"prompt": "x", "images": ["notes.png"]}\n',
        "laozhang",
        [(1, "images")],
    ),
    "size-not-accepted": (
        "jobs.jsonl",
        '{"prompt": "x", "size": "1000x1000"}\n{"prompt": "y", "size": "1280x1280"}\n',
        "laozhang-vip",
        [(1, "size")],
    ),
    "quality-on-laozhang": (
        "jobs.jsonl",
        '{"prompt": "x", "quality": "high"}\n',
        "laozhang",
        [(1, "quality")],
    ),
    "csv-wrong-header": ("jobs.csv", "id,text\n1,hello\n", "laozhang", [(1, "prompt")]),
    "every-problem-listed": (
        "jobs.jsonl",
        '{"prompt": "fine"}\n'
        '{"id": "b"}\n'
        '{"prompt": "x", "quality": "high", "sizee": "1"}\n'
        "not json\n",
        "laozhang",
        [(2, "prompt"), (3, "quality"), (3, "sizee"), (4, "invalid JSON")],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_manifest_is_refused_whole(cli: Invoke, tmp_path: Path, case: str) -> None:
    name, content, route, expected = CASES[case]
    (tmp_path / "notes.png").write_bytes(NOT_AN_IMAGE)
    manifest = tmp_path / name
    manifest.write_text(content, "utf-8")

    result = cli("submit", str(manifest), "--route", route)

    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert lines[-1].endswith("nothing was enqueued."), lines
    problems = lines[:-1]
    assert problems, "no problem was reported"
    # One line per problem: FILE:LINE: field: message (the file as the user named it).
    pattern = re.compile(rf"^{re.escape(str(manifest))}:(\d+): (\S[^:]*): \S")
    found = []
    for line in problems:
        match = pattern.match(line)
        assert match, f"not FILE:LINE: field: message: {line!r}"
        found.append((int(match.group(1)), match.group(2)))
    for line_no, field in expected:
        assert any(n == line_no and f.startswith(field) for n, f in found), (expected, problems)
    assert status_json(cli)["batches"] == []


def test_empty_manifest_is_refused(cli: Invoke, tmp_path: Path) -> None:
    manifest = tmp_path / "empty.jsonl"
    manifest.write_text("", "utf-8")

    result = cli("submit", str(manifest), "--route", "openai")

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    [problem, summary] = result.stderr.splitlines()
    assert problem.startswith(f"{manifest}: ")
    assert "empty" in problem
    assert summary.endswith("nothing was enqueued.")
    assert status_json(cli)["batches"] == []


def test_check_lists_the_same_problems_without_touching_the_database(
    cli: Invoke, tmp_path: Path
) -> None:
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text('{"prompt": "x", "quality": "high"}\n{"id": "z"}\n', "utf-8")

    result = cli("check", str(manifest), "--route", "laozhang")

    assert result.exit_code == 1
    assert f"{manifest}:1: quality: " in result.stderr
    assert f"{manifest}:2: prompt: " in result.stderr
    assert status_json(cli)["batches"] == []
