"""Reading manifests: JSONL and CSV lines, line numbers, file-level problems."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.errors import Problem
from runner.manifest.readers import Record, read_records
from tests.manifest.manifest_helpers import Scan, image_bytes, where, write_jsonl


def test_jsonl_skips_blank_lines_and_numbers_physical_lines(tmp_path: Path, scan: Scan) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('\n{"prompt": "a"}\n   \n\r\n{"prompt": "b"}\r\n\n', encoding="utf-8")
    jobs, problems = scan(path)
    assert problems == []
    assert [(job.line, job.prompt, job.ext_id) for job in jobs] == [(2, "a", "2"), (5, "b", "5")]


def test_ndjson_extension_and_utf8_bom_are_accepted(tmp_path: Path, scan: Scan) -> None:
    path = tmp_path / "m.NDJSON"
    path.write_bytes(b'\xef\xbb\xbf{"prompt": "caf\xc3\xa9"}\n')
    jobs, problems = scan(path)
    assert problems == []
    assert jobs[0].prompt == "café"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "a",}', "invalid JSON"),
        ('{"prompt": "a"} {"prompt": "b"}', "invalid JSON: Extra data"),
        ('{"prompt": NaN}', "invalid JSON: NaN is not valid JSON"),
        ("[1, 2]", "expected a JSON object, found an array"),
        ('"just a string"', "expected a JSON object, found a string"),
        ("null", "expected a JSON object, found null"),
    ],
)
def test_bad_jsonl_line_is_reported_on_its_line(
    tmp_path: Path, scan: Scan, line: str, message: str
) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", [{"prompt": "ok"}, line, {"prompt": "fine"}])
    jobs, problems = scan(path)
    assert where(problems) == [(2, "")]
    assert message in problems[0].message
    assert [job.line for job in jobs] == [1, 3]


def test_invalid_utf8_line_is_reported(tmp_path: Path, scan: Scan) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"prompt": "ok"}\n{"prompt": "\xff"}\n')
    _, problems = scan(path)
    assert where(problems) == [(2, "")]
    assert "not valid UTF-8" in problems[0].message


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("m.jsonl", None, "file not found"),
        ("m.txt", "", "unknown manifest format '.txt'"),
        ("manifest", "", "unknown manifest format ''"),
        ("m.jsonl", "", "no jobs: the file is empty"),
        ("m.jsonl", "\n  \n", "no jobs: the file has no job lines"),
        ("m.csv", "", "no jobs: the file is empty"),
        ("m.csv", "id,prompt\n", "no jobs: the file has no job lines"),
    ],
)
def test_file_level_problems_use_line_zero(
    tmp_path: Path, scan: Scan, name: str, content: str | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    jobs, problems = scan(path)
    assert jobs == []
    assert len(problems) == 1
    assert (problems[0].line, problems[0].field) == (0, "")
    assert message in problems[0].message
    assert str(problems[0]).startswith(f"{path}: ")


def test_manifest_path_that_is_a_directory(tmp_path: Path, scan: Scan) -> None:
    path = tmp_path / "dir.jsonl"
    path.mkdir()
    _, problems = scan(path)
    assert where(problems) == [(0, "")]
    assert "directory" in problems[0].message


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "m.csv"
    path.write_text(text, encoding="utf-8")
    (tmp_path / "a.png").write_bytes(image_bytes())
    (tmp_path / "b.jpg").write_bytes(image_bytes("JPEG"))
    return path


def test_csv_parses_images_metadata_numbers_and_empty_cells(tmp_path: Path, scan: Scan) -> None:
    path = _csv(
        tmp_path,
        "id,prompt,images,n,output_format,output_compression,metadata,size\n"
        'ad-1,"Two products, one scene",a.png | b.jpg,2,jpeg,80,"{""sku"": ""X1"", ""k"": [1]}",\n'
        "ad-2,Just text,,,,,,1536x1024\n",
    )
    jobs, problems = scan(path)
    assert problems == []
    first, second = jobs
    assert first.ext_id == "ad-1"
    assert [image.ref for image in first.images] == [
        str(tmp_path / "a.png"),
        str(tmp_path / "b.jpg"),
    ]
    assert first.params == {"n": 2, "output_format": "jpeg", "output_compression": 80}
    assert first.metadata == {"sku": "X1", "k": [1]}
    assert second.images == ()
    assert second.params == {"size": "1536x1024"}
    assert second.metadata == {}


def test_csv_record_spanning_lines_gets_its_first_line(tmp_path: Path, scan: Scan) -> None:
    path = _csv(tmp_path, 'prompt,n\n"first line\nsecond line",1\n\nplain,x\n')
    jobs, problems = scan(path)
    assert [(job.line, job.prompt) for job in jobs] == [(2, "first line\nsecond line")]
    assert where(problems) == [(5, "n")]
    assert "expected a whole number from 1 to 10, found 'x'" in problems[0].message


def test_csv_bad_metadata_cell(tmp_path: Path, scan: Scan) -> None:
    path = _csv(tmp_path, 'prompt,metadata\nok,{not json}\nok2,"[1, 2]"\n')
    _, problems = scan(path)
    assert where(problems) == [(2, "metadata"), (3, "metadata")]
    assert "not JSON" in problems[0].message
    assert "expected a JSON object, found an array" in problems[1].message


def test_csv_header_with_unknown_column_is_reported_once(tmp_path: Path, scan: Scan) -> None:
    path = _csv(tmp_path, "prompt,colour,size\na,red,1000x1000\nb,blue,1024x1024\n")
    jobs, problems = scan(path)
    assert where(problems) == [(1, "colour"), (2, "size")]
    assert "unknown column" in problems[0].message
    assert [job.line for job in jobs] == [3]


def test_csv_header_without_prompt_column_stops(tmp_path: Path, scan: Scan) -> None:
    path = _csv(tmp_path, "Prompt,size\na,1024x1024\n")
    jobs, problems = scan(path)
    assert jobs == []
    assert where(problems) == [(1, "Prompt"), (1, "prompt")]
    assert "did you mean 'prompt'?" in problems[0].message
    assert "no prompt column" in problems[1].message


def test_csv_duplicate_column_and_wrong_row_width(tmp_path: Path, scan: Scan) -> None:
    path = _csv(tmp_path, "prompt,size,size\na,1024x1024,1024x1024\nb,1024x1024\n")
    _, problems = scan(path)
    assert where(problems) == [(1, "size"), (3, "")]
    assert "appears twice" in problems[0].message
    assert "row has 2 cells; the header has 3" in problems[1].message


def test_csv_malformed_quoting_is_reported_and_reading_goes_on(tmp_path: Path, scan: Scan) -> None:
    path = _csv(tmp_path, 'prompt\nfine\n"broken"quote\nalso fine\n')
    jobs, problems = scan(path)
    assert where(problems) == [(3, "")]
    assert "malformed CSV" in problems[0].message
    assert [job.prompt for job in jobs] == ["fine", "also fine"]


def test_read_records_is_lazy(tmp_path: Path) -> None:
    """The reader is a generator: it yields the first line without reading on to the end."""
    path = write_jsonl(tmp_path / "m.jsonl", [{"prompt": str(i)} for i in range(1000)])
    records = read_records(path)
    first = next(records)
    assert isinstance(first, Record)
    assert first.line == 1
    rest = sum(1 for item in records if not isinstance(item, Problem))
    assert rest == 999


def test_csv_and_jsonl_of_the_same_jobs_agree(tmp_path: Path, scan: Scan) -> None:
    """Both formats produce the same JobSpecs (and therefore the same keys)."""
    (tmp_path / "a.png").write_bytes(image_bytes())
    rows = [
        {"id": "j1", "prompt": "p", "images": ["a.png"], "n": 3, "metadata": {"x": 1}},
        {"prompt": "q", "size": "1024x1536", "output_compression": 5, "output_format": "webp"},
    ]
    jsonl_jobs, _ = scan(write_jsonl(tmp_path / "m.jsonl", rows))
    header = "id,prompt,images,n,metadata,size,output_compression,output_format"
    lines = [header, 'j1,p,a.png,3,"{""x"": 1}",,,', ",q,,,,1024x1536,5,webp"]
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    csv_jobs, problems = scan(csv_path)
    assert problems == []
    # CSV has a header, so its lines are one further down; everything else must agree.
    assert [(j.key, j.params, j.images, j.metadata) for j in csv_jobs] == [
        (j.key, j.params, j.images, j.metadata) for j in jsonl_jobs
    ]


def test_csv_invalid_utf8_row_and_oversized_cell(tmp_path: Path, scan: Scan) -> None:
    path = tmp_path / "m.csv"
    huge = "data:image/png;base64," + "A" * 200_000
    path.write_bytes(b"prompt,images\nok,\nbad \xff,\n" + f"big,{huge}\nfine,\n".encode())
    jobs, problems = scan(path)
    assert where(problems) == [(3, ""), (4, "")]
    assert "not valid UTF-8" in problems[0].message
    assert "large data: URLs fit in JSONL" in problems[1].message
    assert [job.prompt for job in jobs] == ["ok", "fine"]
