"""Image bytes: exact size and format, deterministic, distinct per prompt, edits from the source."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from runner.sandbox.render import RenderSpec, probe, render_edit, render_generation

from .helpers import image_of, png_bytes, rgb_at


@pytest.mark.parametrize(("width", "height"), [(64, 64), (1280, 544), (2160, 3840)])
@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_exact_size_and_format(width: int, height: int, fmt: str) -> None:
    data = render_generation(RenderSpec(prompt="size check", width=width, height=height, fmt=fmt))  # type: ignore[arg-type]
    image = image_of(data)
    assert image.size == (width, height)
    assert image.format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fmt]


def test_bytes_depend_only_on_the_spec() -> None:
    spec = RenderSpec(prompt="a tree", width=256, height=256)
    render_generation.cache_clear()
    first = render_generation(spec)
    render_generation.cache_clear()
    assert render_generation(spec) == first
    assert render_generation(RenderSpec(prompt="a tree!", width=256, height=256)) != first
    assert render_generation(RenderSpec(prompt="a tree", width=256, height=256, variant=1)) != first


def test_edit_keeps_the_source_outside_the_mask() -> None:
    source = png_bytes(100, 100, (10, 120, 250))
    mask = Image.new("RGBA", (100, 100), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (50, 0, 100, 100))  # right half transparent: edit there
    out = io.BytesIO()
    mask.save(out, "PNG")
    edited = image_of(
        render_edit(RenderSpec(prompt="warm", width=200, height=200), source, out.getvalue())
    )
    rgb = edited.convert("RGB")
    assert rgb_at(rgb, 40, 80) == (10, 120, 250)
    assert rgb_at(rgb, 160, 80) != (10, 120, 250)


def test_unreadable_bytes_are_refused() -> None:
    with pytest.raises(ValueError, match="not a readable image"):
        probe(b"definitely not a png")
    with pytest.raises(ValueError, match="cannot decode"):
        render_edit(RenderSpec(prompt="x", width=64, height=64), png_bytes(8, 8, (1, 1, 1))[:40])
