"""Real image bytes: deterministic pictures from a prompt, and edits derived from a source.

Same prompt and size give the same bytes; different prompts give visibly different colours,
shapes and caption. Everything here is blocking Pillow work; callers run it in a worker
thread unless the image is tiny.
"""

from __future__ import annotations

import colorsys
import functools
import hashlib
import io
import random
from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageDraw, ImageFont, ImageOps

ImageFormat = Literal["png", "jpeg", "webp"]

MIME_TYPES: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
#: Edge of every image in tiny mode, whatever size was asked for.
TINY_EDGE = 64

RGB = tuple[int, int, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class RenderSpec:
    """What to draw and how to encode it."""

    prompt: str
    width: int
    height: int
    fmt: ImageFormat = "png"
    compression: int = 100
    transparent: bool = False
    #: The k-th image of an ``n > 1`` request (0 for the first): same caption, new colours.
    variant: int = 0
    #: Overlay seeded noise so the image compresses like a photograph (memory benchmarks).
    grain: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageInfo:
    """What a source image turned out to be."""

    width: int
    height: int
    fmt: str
    has_alpha: bool


def probe(data: bytes) -> ImageInfo:
    """Read an image's header.

    Raises:
        ValueError: the bytes are not an image Pillow can open.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            bands = image.getbands()
            alpha = "A" in bands or "transparency" in image.info
            return ImageInfo(
                width=image.width, height=image.height, fmt=str(image.format), has_alpha=alpha
            )
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a readable image: {exc}") from exc


def _palette(prompt: str, variant: int = 0) -> tuple[RGB, RGB, RGB, bytes]:
    seed = f"{prompt}\x00{variant}" if variant else prompt
    digest = hashlib.sha256(seed.encode()).digest()
    hue = digest[0] / 255

    def colour(h: float, s: float, v: float) -> RGB:
        r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
        return round(r * 255), round(g * 255), round(b * 255)

    first = colour(hue, 0.55 + digest[1] / 640, 0.85)
    second = colour(hue + 0.25 + digest[2] / 1020, 0.7, 0.45 + digest[3] / 640)
    accent = colour(hue + 0.5, 0.9, 0.95)
    return first, second, accent, digest


@functools.lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Loading the font costs more than drawing a tiny image: load each size once.
    return ImageFont.load_default(size=max(8, size))


#: Below this edge a caption would be unreadable: tiny images skip the (costly) text.
_CAPTION_MIN_EDGE = 128


def _caption(draw: ImageDraw.ImageDraw, text: str, width: int, height: int) -> None:
    if min(width, height) < _CAPTION_MIN_EDGE:
        return
    band = max(10, height // 12)
    draw.rectangle((0, height - band, width, height), fill=(20, 20, 20))
    draw.text(
        (band // 4, height - band + band // 6), text, fill=(245, 245, 245), font=_font(band // 2)
    )


def _gradient(first: RGB, second: RGB, size: tuple[int, int], *, vertical: bool) -> Image.Image:
    # Two pixels stretched bilinearly: a ramp for the cost of one resize, at any size.
    ramp = Image.frombytes("RGB", (1, 2) if vertical else (2, 1), bytes((*first, *second)))
    return ramp.resize(size, Image.Resampling.BILINEAR)


def _draw_generation(spec: RenderSpec) -> Image.Image:
    first, second, accent, digest = _palette(spec.prompt, spec.variant)
    w, h = spec.width, spec.height
    image = _gradient(first, second, (w, h), vertical=bool(digest[4] % 2))
    shapes = Image.new("L", (w, h), 0)
    draw, mask_draw = ImageDraw.Draw(image), ImageDraw.Draw(shapes)
    for i in range(3 + digest[5] % 4):
        x, y = digest[6 + 3 * i] / 255 * w, digest[7 + 3 * i] / 255 * h
        r = (0.06 + digest[8 + 3 * i] / 255 * 0.2) * min(w, h)
        box = (x - r, y - r, x + r, y + r)
        shape = draw.ellipse if (digest[20] >> i) & 1 else draw.rectangle
        shape(
            box, fill=accent if i % 2 else second, outline=(255, 255, 255), width=max(1, w // 256)
        )
        (mask_draw.ellipse if (digest[20] >> i) & 1 else mask_draw.rectangle)(box, fill=255)
    _caption(draw, f"{spec.prompt[:60]}  [{w}x{h}]", w, h)
    mask_draw.rectangle((0, h - max(10, h // 12), w, h), fill=255)
    if spec.grain:
        noise = random.Random(digest).randbytes(w * h * 3)
        image = Image.blend(image, Image.frombytes("RGB", (w, h), noise), 0.3)
    if spec.transparent:
        image.putalpha(shapes)
    return image


def _encode(image: Image.Image, spec: RenderSpec) -> bytes:
    out = io.BytesIO()
    if spec.fmt == "png":
        # Level 1: the sandbox is about speed, and the bytes stay deterministic.
        image.save(out, "PNG", compress_level=1)
    elif spec.fmt == "jpeg":
        image.convert("RGB").save(out, "JPEG", quality=max(1, min(95, spec.compression)))
    else:
        image.save(out, "WEBP", quality=max(1, spec.compression), method=0)
    return out.getvalue()


@functools.lru_cache(maxsize=32)
def render_generation(spec: RenderSpec) -> bytes:
    """Encoded bytes of the picture for ``spec`` (cached: the same request costs nothing)."""
    return _encode(_draw_generation(spec), spec)


def _open_rgb(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.convert("RGB")


def _edit_region(mask: bytes, size: tuple[int, int]) -> Image.Image:
    """The area to edit: where the mask is fully transparent (alpha 0), as OpenAI defines it."""
    with Image.open(io.BytesIO(mask)) as image:
        image.load()
        alpha = image.getchannel("A") if "A" in image.getbands() else image.convert("L")
    return ImageOps.invert(alpha.resize(size)).point(lambda v: 255 if v == 255 else 0)


def render_edit(spec: RenderSpec, source: bytes, mask: bytes | None = None) -> bytes:
    """An edit of ``source``: resized to the spec, tinted and framed in the prompt's colours.

    With a mask, only its transparent area is tinted; the rest keeps the source pixels.

    Raises:
        ValueError: the source or mask cannot be decoded.
    """
    first, _second, accent, _digest = _palette(spec.prompt, spec.variant)
    size = (spec.width, spec.height)
    try:
        base = ImageOps.fit(_open_rgb(source), size)
        edited = Image.blend(base, Image.new("RGB", size, first), 0.35)
        if mask is not None:
            edited = Image.composite(edited, base, _edit_region(mask, size))
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot decode the source image: {exc}") from exc
    draw = ImageDraw.Draw(edited)
    draw.rectangle((0, 0, size[0] - 1, size[1] - 1), outline=accent, width=max(2, min(size) // 40))
    _caption(draw, f"edit: {spec.prompt[:54]}", *size)
    return _encode(edited, spec)


def render_copy(spec: RenderSpec, source: bytes) -> bytes:
    """``source`` fitted to the spec and nothing else: an "edit" that changed nothing.

    Raises:
        ValueError: the source cannot be decoded.
    """
    try:
        base = ImageOps.fit(_open_rgb(source), (spec.width, spec.height))
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot decode the source image: {exc}") from exc
    return _encode(base, spec)
