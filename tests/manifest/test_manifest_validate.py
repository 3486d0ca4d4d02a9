"""Checking lines against a route: every field, relations between fields, ALL problems."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.manifest.manifest_helpers import Scan, image_bytes, where, write_jsonl

P = "a product render"


def _one(tmp_path: Path, scan: Scan, row: dict[str, Any], route: str = "openai") -> list[Any]:
    """Scan a manifest whose only line is ``row``; return its problems."""
    _, problems = scan(write_jsonl(tmp_path / "m.jsonl", [row]), route)
    return problems


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ({"size": "1024x1024"}, "prompt", "missing; every line needs a prompt"),
        ({"prompt": ""}, "prompt", "is empty"),
        ({"prompt": "  \t "}, "prompt", "is empty"),
        ({"prompt": 42}, "prompt", "expected a string, found a number"),
        ({"prompt": "x" * 32_001}, "prompt", "is 32,001 characters; the limit is 32,000"),
        ({"prompt": "a\ud800b"}, "prompt", "invalid Unicode"),
        ({"prompt": P, "colour": "red"}, "colour", "unknown field"),
        ({"prompt": P, "qualty": "high"}, "qualty", "did you mean 'quality'?"),
        ({"prompt": P, "n": 0}, "n", "must be from 1 to 10, found 0"),
        ({"prompt": P, "n": 11}, "n", "must be from 1 to 10"),
        ({"prompt": P, "n": 2.5}, "n", "expected a whole number"),
        ({"prompt": P, "n": True}, "n", "expected a whole number"),
        ({"prompt": P, "n": "2"}, "n", "expected a whole number"),
        ({"prompt": P, "size": "1000x1000"}, "size", "multiples of 16"),
        ({"prompt": P, "size": "4096x4096"}, "size", "longest edge"),
        ({"prompt": P, "size": "big"}, "size", "expected WIDTHxHEIGHT"),
        ({"prompt": P, "size": 1024}, "size", "expected a string"),
        ({"prompt": P, "quality": "ultra"}, "quality", "expected one of low, medium, high, auto"),
        ({"prompt": P, "output_format": "gif"}, "output_format", "expected one of png, jpeg, webp"),
        ({"prompt": P, "background": "white"}, "background", "expected one of transparent"),
        ({"prompt": P, "moderation": "high"}, "moderation", "expected one of low, auto"),
        (
            {"prompt": P, "output_format": "jpeg", "output_compression": 101},
            "output_compression",
            "must be from 0 to 100",
        ),
        (
            {"prompt": P, "output_compression": 50},
            "output_compression",
            "applies only to output_format jpeg or webp, not png",
        ),
        (
            {"prompt": P, "output_format": "jpeg", "background": "transparent"},
            "background",
            "transparent needs output_format png or webp, not jpeg",
        ),
        ({"prompt": P, "model": ""}, "model", "expected a model name"),
        ({"prompt": P, "metadata": [1]}, "metadata", "expected a JSON object, found an array"),
        ({"prompt": P, "images": "https://"}, "images", "URL has no host"),
        ({"prompt": P, "images": []}, "images", "is empty; leave the field out"),
        ({"prompt": P, "images": [1]}, "images", "expected image references as strings"),
        ({"prompt": P, "images": {"a": 1}}, "images", "expected a list of image references"),
        ({"prompt": P, "images": ["https://x.test/a.png"] * 17}, "images", "the limit is 16"),
        ({"prompt": P, "mask": "https://x.test/m.png"}, "mask", "needs images"),
        ({"prompt": P, "id": True}, "id", "expected a string or an integer, found a boolean"),
        ({"prompt": P, "id": 1.5}, "id", "expected a string or an integer, found a number"),
        ({"prompt": P, "id": ""}, "id", "is empty"),
        ({"prompt": P, "id": "../escape"}, "id", "must not contain '/'"),
        ({"prompt": P, "id": "x" * 129}, "id", "longer than 128"),
    ],
)
def test_bad_field_is_reported_with_line_and_field(
    tmp_path: Path, scan: Scan, row: dict[str, Any], field: str, message: str
) -> None:
    problems = _one(tmp_path, scan, row)
    assert where(problems) == [(1, field)]
    assert message in problems[0].message


@pytest.mark.parametrize(
    ("route", "row", "field", "message"),
    [
        ("laozhang", {"quality": "high"}, "quality", "this route does not accept quality"),
        ("laozhang", {"size": "1024x1024"}, "size", "this route does not accept size"),
        ("laozhang-vip", {"size": "1024x1024"}, "size", "not one of the 30 sizes"),
        ("laozhang-vip", {"size": "auto"}, "size", "'auto' is not accepted"),
        ("laozhang-vip", {"quality": "low"}, "quality", "this route does not accept quality"),
        ("laozhang-chat", {"n": 2}, "n", "this route does not accept n"),
        ("openai", {"response_format": "url"}, "response_format", "does not accept"),
        ("laozhang-official", {"response_format": "png"}, "response_format", "b64_json, url"),
        ("openai-responses", {"n": 2}, "n", "this route does not accept n"),
    ],
)
def test_route_rules(
    tmp_path: Path, scan: Scan, route: str, row: dict[str, Any], field: str, message: str
) -> None:
    problems = _one(tmp_path, scan, {"prompt": P, **row}, route)
    assert where(problems) == [(1, field)]
    assert message in problems[0].message


@pytest.mark.parametrize(
    ("route", "size"),
    [
        ("laozhang-vip", "3840x2160"),
        ("laozhang-vip", "848x1280"),
        ("openai", "2048x1152"),
        ("openai", "auto"),
        ("laozhang-official", "1536x864"),
    ],
)
def test_accepted_sizes(tmp_path: Path, scan: Scan, route: str, size: str) -> None:
    assert _one(tmp_path, scan, {"prompt": P, "size": size}, route) == []


def test_model_override_changes_the_size_and_quality_rules(tmp_path: Path, scan: Scan) -> None:
    """gpt-image-1.5 takes only the legacy sizes; gpt-image-2.5 models take 'xhigh'."""
    rows = [
        {"prompt": P, "model": "gpt-image-1.5", "size": "2048x1152"},
        {"prompt": P, "model": "gpt-image-2.5-sunburst", "quality": "xhigh"},
        {"prompt": P, "quality": "xhigh"},
    ]
    jobs, problems = scan(write_jsonl(tmp_path / "m.jsonl", rows))
    assert where(problems) == [(1, "size"), (3, "quality")]
    assert jobs[0].params == {"quality": "xhigh", "model": "gpt-image-2.5-sunburst"}


def test_params_hold_only_options_present(tmp_path: Path, scan: Scan) -> None:
    rows = [
        {"prompt": P},
        {"prompt": P + "!", "model": "gpt-image-2", "metadata": {"a": [1, {"b": None}]}},
        {
            "prompt": P,
            "id": 7,
            "size": "1024x1024",
            "quality": "high",
            "n": 3,
            "output_format": "webp",
            "output_compression": 0,
            "background": "transparent",
            "moderation": "low",
        },
    ]
    jobs, problems = scan(write_jsonl(tmp_path / "m.jsonl", rows))
    assert problems == []
    assert jobs[0].params == {}
    assert jobs[0].metadata == {}
    # Naming the route's own model is not an override.
    assert jobs[1].params == {}
    assert jobs[1].metadata == {"a": [1, {"b": None}]}
    assert jobs[2].ext_id == "7"
    assert jobs[2].params == {
        "size": "1024x1024",
        "quality": "high",
        "n": 3,
        "output_format": "webp",
        "output_compression": 0,
        "background": "transparent",
        "moderation": "low",
    }


def test_every_problem_of_every_line_is_reported(tmp_path: Path, scan: Scan) -> None:
    rows: list[dict[str, Any] | str] = [
        {"prompt": "fine"},
        {"prompt": "", "size": "1000x1000", "quality": "ultra", "colour": 1},
        "{broken",
        {"prompt": "fine too", "n": 2},
        {"images": ["missing.png"], "mask": "missing-mask.png", "n": 99},
        {"prompt": "fine", "id": "a"},
        {"prompt": "again", "id": "a"},
    ]
    jobs, problems = scan(write_jsonl(tmp_path / "m.jsonl", rows))
    assert where(problems) == [
        (2, "prompt"),
        (2, "size"),
        (2, "quality"),
        (2, "colour"),
        (3, ""),
        (5, "n"),
        (5, "prompt"),
        (5, "images"),
        (5, "mask"),
        (7, "id"),
    ]
    assert [job.line for job in jobs] == [1, 4, 6]


def test_problem_text_names_file_line_and_field(tmp_path: Path, scan: Scan) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", [{"prompt": P, "quality": "high"}])
    _, problems = scan(path, "laozhang")
    assert str(problems[0]) == f"{path}:1: quality: this route does not accept quality"


def test_mask_checks(tmp_path: Path, scan: Scan) -> None:
    (tmp_path / "src.png").write_bytes(image_bytes(size=(64, 48)))
    (tmp_path / "ok-mask.png").write_bytes(image_bytes(size=(64, 48), mode="RGBA"))
    (tmp_path / "flat-mask.png").write_bytes(image_bytes(size=(64, 48)))
    (tmp_path / "small-mask.png").write_bytes(image_bytes(size=(32, 32), mode="RGBA"))
    rows = [
        {"prompt": P, "images": ["src.png"], "mask": "ok-mask.png"},
        {"prompt": P, "images": ["src.png"], "mask": "flat-mask.png"},
        {"prompt": P, "images": ["src.png"], "mask": "small-mask.png"},
        {"prompt": P, "images": ["https://x.test/a.png"], "mask": "small-mask.png"},
        {"prompt": P, "images": ["src.png"], "mask": "ok-mask.png"},
    ]
    jobs, problems = scan(write_jsonl(tmp_path / "m.jsonl", rows), "laozhang-enterprise")
    assert where(problems) == [(2, "mask"), (3, "mask"), (5, "")]
    assert "alpha channel" in problems[0].message
    assert "mask is 32x32 but the first image is 64x48" in problems[1].message
    assert "duplicate of line 1" in problems[2].message
    assert jobs[0].mask is not None
    assert jobs[0].mask.ref == str(tmp_path / "ok-mask.png")
    # Unknown dimensions (a URL source) are not guessed at.
    assert jobs[1].line == 4
