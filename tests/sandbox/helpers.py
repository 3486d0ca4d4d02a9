"""Helpers shared by the sandbox tests: keys, a fake clock, image decoding."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

from PIL import Image

OPENAI_KEY = "sk-sandbox-openai"
DEFAULT_KEY = "sk-default-sandbox"
OFFICIAL_KEY = "sk-sora2official-sandbox"
ENTERPRISE_KEY = "sk-enterprise-sandbox"


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def auth(key: str, **extra: str) -> dict[str, str]:
    """Request headers with a bearer key."""
    return {"Authorization": f"Bearer {key}", **extra}


def decode_b64(value: str) -> bytes:
    """Decode a b64_json value the way a careful client must: strip a data-URL prefix, re-pad."""
    if value.startswith("data:"):
        value = value.split(",", 1)[1]
    value += "=" * (-len(value) % 4)
    return base64.b64decode(value, validate=True)


def image_of(data: bytes) -> Image.Image:
    """Fully decode image bytes (raises if they are not a valid image)."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def rgb_at(image: Image.Image, x: int, y: int) -> tuple[int, int, int]:
    """The RGB colour of one pixel."""
    pixel = image.convert("RGB").getpixel((x, y))
    assert isinstance(pixel, tuple)
    return int(pixel[0]), int(pixel[1]), int(pixel[2])


def png_bytes(width: int, height: int, colour: tuple[int, ...], mode: str = "RGB") -> bytes:
    """A solid PNG for use as a source image or mask."""
    out = io.BytesIO()
    Image.new(mode, (width, height), colour).save(out, "PNG")
    return out.getvalue()


InProcess = Callable[..., Any]
