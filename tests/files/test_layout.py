"""Output file names: the one scheme that writes them also reads them back."""

from __future__ import annotations

import pytest

from runner.files.atomic import temporary_name
from runner.files.layout import OutputName, output_path, parse_output_name


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "gif"])
def test_a_written_name_parses_back_to_its_parts(fmt: str) -> None:
    path = output_path("b-1", 42, 3, fmt)
    assert path == f"b-1/42-3.{fmt}"
    folder, name = path.split("/")
    parsed = parse_output_name(folder, name)
    assert parsed == OutputName(batch_id="b-1", job_id=42, k=3, format=fmt)
    assert parsed.path == path


@pytest.mark.parametrize(
    # A fixed pid: xdist workers must collect the same test ids.
    "name",
    ["42-3.bmp", "42.png", "x-3.png", "42-3.png.bak", temporary_name("42-3.png", 4242)],
)
def test_other_files_are_not_outputs(name: str) -> None:
    assert parse_output_name("b-1", name) is None
