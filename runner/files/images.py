"""Image bytes: base64 as providers send it, one inspection, and what was asked against got.

:func:`inspect_image` is the one check every image passes, whether a provider returned it or a
manifest names it as a source: it returns an :class:`ImageInfo` or raises :class:`ImageError`
saying why the bytes are not a usable image. Callers that report problems as text (manifest
validation) use the message; the engine turns it into a ``bad_response`` attempt.

Pillow is imported by the two functions that read pixels, not with the module: the records
here (:class:`ImageInfo`, :class:`Mismatch`) travel with every output record, and commands
that only read the database (``imagerun status``) need no Pillow.
"""

from __future__ import annotations

import binascii
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runner.errors import ImagerunError
from runner.routes.sizes import Size, parse_size

#: Our file extension (and format name) for each Pillow format name.
EXTENSIONS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp", "GIF": "gif"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The CRC of an ``IEND`` chunk, which has no data and so always the same checksum.
_IEND_CRC = b"\xaeB`\x82"
#: ASCII whitespace, as MIME encoders and pretty-printers put it into base64.
_WHITESPACE = b" \t\n\r\x0b\x0c"


class ImageError(ImagerunError):
    """Bytes that are not a complete, usable image; the message says why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageInfo:
    """What inspection learnt about one image."""

    format: str  # "png" | "jpeg" | "webp" | "gif", or Pillow's name in lower case
    width: int
    height: int
    alpha: bool = False


def decode_b64(value: str) -> bytes:
    """Decode an image's base64 as providers and users write it.

    Tolerated, then decoded strictly: a ``data:<mime>;base64,`` prefix, missing ``=`` padding
    (gateways strip it) and whitespace such as MIME line breaks every 76 characters.

    Raises:
        ImageError: the text is not base64 even after those repairs.
    """
    if value.startswith("data:"):
        _, _, value = value.partition(",")
    try:
        text = value.encode("ascii")
        try:
            return _strict_b64(text)
        except binascii.Error:
            # Removing whitespace copies the text: done only when the plain decode failed.
            return _strict_b64(text.translate(None, _WHITESPACE))
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ImageError(f"image base64 does not decode: {exc}") from exc


def _strict_b64(text: bytes) -> bytes:
    if len(text) % 4:
        text += b"=" * (-len(text) % 4)
    return binascii.a2b_base64(text, strict_mode=True)


def inspect_image(data: bytes, *, decode: bool = True) -> ImageInfo:
    """Check that ``data`` is a complete image and report its format, size and alpha.

    PNGs are checked by Pillow's ``verify``, which reads every chunk and checks its CRC
    without expanding the pixels, then by the ``IEND`` checksum that ``verify`` stops short
    of. Other formats are fully decoded when ``decode`` is true; without it only their
    headers are read (Pillow's ``verify`` checks little beyond PNG).

    Raises:
        ImageError: the bytes are empty, not an image, too large to open or damaged.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageError("empty file, not an image")
    buffer = io.BytesIO(data)
    try:
        with Image.open(buffer) as image:
            fmt = image.format or "unknown"
            bands = image.getbands()
            info = ImageInfo(
                format=EXTENSIONS.get(fmt, fmt.lower()),
                width=image.width,
                height=image.height,
                alpha="A" in bands or "a" in bands or "transparency" in image.info,
            )
            if fmt == "PNG" or not decode:
                image.verify()
            else:
                image.load()
    except UnidentifiedImageError as exc:
        raise ImageError(_unidentified(data)) from exc
    except Image.DecompressionBombError as exc:
        raise ImageError("image has too many pixels") from exc
    except Exception as exc:  # Pillow reports damaged files with many exception types.
        raise ImageError(f"damaged image: {exc}") from exc
    if fmt == "PNG":
        # verify() stops after reading IEND's length and type; the buffer sits at its CRC.
        at = buffer.tell()
        if data[at : at + 4] != _IEND_CRC:
            raise ImageError("damaged image: broken PNG file (bad checksum in b'IEND')")
    return info


def _unidentified(data: bytes) -> str:
    """Why Pillow could not open ``data``: a damaged PNG header says more than "unknown"."""
    from PIL import PngImagePlugin

    if data.startswith(PNG_SIGNATURE):
        try:
            PngImagePlugin.PngImageFile(io.BytesIO(data)).close()
        except Exception as exc:  # the PNG plugin's own reason, e.g. a header chunk's CRC
            return f"damaged image: {exc}"
    return "not an image (Pillow cannot identify the format)"


@dataclass(frozen=True, slots=True, kw_only=True)
class Expected:
    """What a job asked its images to be; ``None`` where it left the choice to the provider."""

    format: str | None = None
    size: Size | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Expected:
        """Read ``output_format`` and ``size`` (``auto`` asks for nothing) from job params."""
        fmt = params.get("output_format")
        size = params.get("size")
        return cls(
            format="jpeg" if fmt == "jpg" else (str(fmt) if fmt else None),
            size=parse_size(str(size)) if size and size != "auto" else None,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Mismatch:
    """How a delivered image differs from what was asked, in the asked-for terms only.

    Attributes:
        asked: e.g. ``"1024x1024"``, ``"jpeg"`` or ``"1024x1024 jpeg"``.
        got: the same aspects of the image that came, e.g. ``"96x64"`` or ``"96x64 png"``.
    """

    asked: str
    got: str

    def __str__(self) -> str:
        return f"asked for {self.asked}, got {self.got}"


def check_expected(info: ImageInfo, expected: Expected) -> Mismatch | None:
    """How ``info`` differs from ``expected``, or ``None`` when it is what was asked for.

    A difference is a fact to record, not a failure: the provider delivered (and billed) an
    image, and the route decides what a mismatch means for the job.
    """
    asked: list[str] = []
    got: list[str] = []
    size = expected.size
    if size is not None and (info.width, info.height) != (size.width, size.height):
        asked.append(str(size))
        got.append(f"{info.width}x{info.height}")
    if expected.format and info.format != expected.format:
        asked.append(expected.format)
        got.append(info.format)
    if not asked:
        return None
    return Mismatch(asked=" ".join(asked), got=" ".join(got))
