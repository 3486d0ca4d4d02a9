"""What the price engine reads of a job: from a manifest line and from a stored job, masks
included (OpenAI bills the mask as input image tokens, like each source image).

Hand figures (prices.toml): gpt-image-2 text in $5/M, image in $8/M; each input image is
765 / 3050 / 6100 tokens (low / typical / high) → $0.00612 / $0.0244 / $0.0488.
PROMPT has 40 characters → 7 / 10 / 40 text tokens → $0.000035 / $0.00005 / $0.0002.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from runner.errors import Problem
from runner.manifest import scan_manifest
from runner.models import Job, JobSpec, Outcome, SourceImage
from runner.pricing import (
    PriceBook,
    PricedJob,
    attempt_cost,
    estimate_job,
    worst_case,
)
from runner.routes import Catalog, load_catalog
from runner.routes.sizes import Size

PROMPT = "Two red foxes asleep in fresh snow, dawn"
SOURCE = SourceImage(kind="path", ref="/in/fox.png")
MASK = SourceImage(kind="path", ref="/in/mask.png")


def _png(path: Path, mode: str) -> None:
    buffer = io.BytesIO()
    Image.new(mode, (64, 64), (10, 20, 30, 0) if mode == "RGBA" else (10, 20, 30)).save(
        buffer, format="PNG"
    )
    path.write_bytes(buffer.getvalue())


def _job(*, mask: SourceImage | None, params: dict[str, object]) -> Job:
    return Job(
        id=1,
        batch_id="b",
        route="openai",
        ext_id="j",
        prompt=PROMPT,
        params=params,
        images=(SOURCE,),
        mask=mask,
        attempts=0,
        created_at=datetime(2026, 12, 1, tzinfo=UTC),
    )


def test_a_validated_manifest_line_counts_its_mask(
    tmp_path: Path, book: PriceBook, catalog: Catalog
) -> None:
    """One source image and a mask: two input images, each priced like a source image."""
    _png(tmp_path / "fox.png", "RGB")
    _png(tmp_path / "mask.png", "RGBA")
    fields = {"prompt": PROMPT, "quality": "medium", "size": "1536x1024", "n": 2}
    line = {"id": "edit", "images": ["fox.png"], "mask": "mask.png", **fields}
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text(json.dumps(line) + "\n", "utf-8")
    route = catalog.get("openai")
    items = list(scan_manifest(manifest, route, catalog))
    assert not [i for i in items if isinstance(i, Problem)]
    (spec,) = items
    assert isinstance(spec, JobSpec)
    assert spec.mask is not None

    job = PricedJob.from_line(spec)

    assert job == PricedJob(
        model=None, n=2, quality="medium", size=Size(1536, 1024), prompt_chars=40, input_images=2
    )
    estimate = estimate_job(book, route, job)
    # 2 × 0.041 = 0.082 output, + text, + two input images:
    # 0.082 + 0.000035 + 2 × 0.00612 / 0.082 + 0.00005 + 2 × 0.0244 / 0.082 + 0.0002 + 2 × 0.0488
    assert (estimate.low, estimate.typical, estimate.high) == pytest.approx(
        (0.094275, 0.13085, 0.1798), abs=1e-9
    )
    assert "2 input image(s)" in estimate.basis


def test_a_stored_job_counts_its_mask_in_the_worst_case(book: PriceBook, catalog: Catalog) -> None:
    """High quality 1024x1024: 0.211 + text 0.0002 + 0.0488 per input image."""
    params: dict[str, object] = {"quality": "high", "size": "1024x1024"}
    route = catalog.get("openai")
    with_mask = PricedJob.from_job(_job(mask=MASK, params=params))
    without = PricedJob.from_job(_job(mask=None, params=params))
    assert (with_mask.input_images, without.input_images) == (2, 1)
    assert worst_case(book, route, with_mask) == pytest.approx(0.3088, abs=1e-9)
    assert worst_case(book, route, without) == pytest.approx(0.26, abs=1e-9)


def test_an_attempt_without_usage_prices_the_mask(book: PriceBook, catalog: Catalog) -> None:
    """No usage: typical medium 1024x1024 0.053 + text 0.00005 + 2 × 0.0244 = 0.10185."""
    params: dict[str, object] = {"quality": "medium", "size": "1024x1024"}
    cost = attempt_cost(
        book,
        catalog.get("openai"),
        job=PricedJob.from_job(_job(mask=MASK, params=params)),
        usage=None,
        outcome=Outcome.OK,
        images=1,
    )
    assert cost.expected_usd == pytest.approx(0.10185, abs=1e-9)
    assert cost.basis.endswith("+ estimated input tokens")


def test_fields_are_read_as_the_api_defaults_them() -> None:
    """Absent n is 1, ``auto`` size is no size, a model override is kept, quality as given."""
    job = PricedJob.from_fields(
        prompt="", params={"size": "auto", "quality": "auto", "model": "gpt-image-1.5"}
    )
    assert job == PricedJob(model="gpt-image-1.5", n=1, quality="auto", size=None)
    assert job.model_on(load_catalog(environ={}).get("openai")) == "gpt-image-1.5"
    assert PricedJob.from_fields(prompt="x", params={"n": 0}).n == 1
