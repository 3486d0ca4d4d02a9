"""The HTML gallery as a file: escaped, self-contained, with real thumbnails beside it.

How it renders in a browser is pinned by ``test_gallery_browser.py``.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from PIL import Image

from runner.export import export_batch
from runner.export.thumbs import THUMB_PX, make_thumbnail

from .builders import EVIL_PROMPT, Sample, image_bytes

pytestmark = pytest.mark.anyio


async def gallery(sample: Sample, out: Path, formats: tuple[str, ...] = ("html",)) -> str:
    await export_batch(
        sample.store,
        sample.batch,
        data_dir=sample.data_dir,
        out_dir=out,
        formats=list(formats),
    )
    return (out / "pets" / "index.html").read_text(encoding="utf-8")


async def test_user_strings_are_escaped_and_the_only_script_is_ours(
    sample: Sample, out: Path
) -> None:
    page = await gallery(sample, out)

    assert html.escape(EVIL_PROMPT, quote=True) in page
    assert "<script>alert" not in page
    assert "<img src=x" not in page
    assert page.count("<script") == 1
    assert html.escape("Invalid size <b>9x9</b>", quote=True) in page


async def test_the_page_loads_nothing_from_elsewhere(sample: Sample, out: Path) -> None:
    page = await gallery(sample, out)

    references = re.findall(r"""(?:src|href)=['"]([^'"]*)['"]""", page)
    assert references
    assert all(not re.match(r"^[a-z]+:|^//", ref) for ref in references), references
    assert "default-src &#x27;none&#x27;" in page  # the CSP, escaped inside its attribute


async def test_every_output_has_a_lazy_thumbnail_and_failures_have_cards(
    sample: Sample, out: Path
) -> None:
    page = await gallery(sample, out)

    sources = re.findall(r"<img src='(thumbs/[^']+)' loading='lazy'", page)
    assert len(sources) == 6
    for source in sources:
        with Image.open(out / "pets" / source) as thumb:
            assert thumb.format == "WEBP"
            assert max(thumb.size) <= THUMB_PX
    statuses = re.findall(r"<article class='card' data-status='(\w+)'", page)
    assert statuses == ["succeeded"] * 6 + ["failed", "unknown"]


async def test_thumbnails_link_to_the_exported_files_when_both_are_exported(
    sample: Sample, out: Path
) -> None:
    page = await gallery(sample, out, ("files", "html"))

    links = re.findall(r"<a href='([^']+)'>", page)
    assert links == [
        "cat-1.png",
        "dog-2-0.png",
        "dog-2-1.png",
        "dog-2-2.jpeg",
        "evil.png",
        "cat-dup.png",
    ]
    assert all((out / "pets" / link).is_file() for link in links)


async def test_a_missing_image_gets_a_card_without_a_broken_thumbnail(
    sample: Sample, out: Path
) -> None:
    (sample.data_dir / sample.truth()[0]["path"]).unlink()

    page = await gallery(sample, out)

    assert len(re.findall(r"<img ", page)) == 5
    assert "image unavailable" in page


def test_large_images_shrink_to_the_thumbnail_size_and_keep_transparency(
    tmp_path: Path,
) -> None:
    source = tmp_path / "big.png"
    image = Image.new("RGBA", (1536, 1024), (10, 20, 30, 0))
    image.save(source)
    target = tmp_path / "thumb.webp"

    assert make_thumbnail(source, target) is True
    assert make_thumbnail(source, target) is False  # made once

    with Image.open(target) as thumb:
        assert thumb.size == (THUMB_PX, round(THUMB_PX * 1024 / 1536))
        assert thumb.mode == "RGBA"


def test_jpeg_sources_make_rgb_thumbnails(tmp_path: Path) -> None:
    source = tmp_path / "photo.jpeg"
    source.write_bytes(image_bytes(800, 600, (200, 100, 50), "JPEG"))

    make_thumbnail(source, tmp_path / "t.webp")

    with Image.open(tmp_path / "t.webp") as thumb:
        assert (thumb.mode, max(thumb.size)) == ("RGB", THUMB_PX)
