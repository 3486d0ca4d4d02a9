"""Decoding returned images' base64, verifying image bytes, comparing them with what was asked."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from runner.files.images import (
    Expected,
    ImageError,
    Mismatch,
    check_expected,
    decode_b64,
    inspect_image,
)
from runner.routes.sizes import Size


def _png(width: int = 32, height: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def test_gateway_data_url_without_padding_decodes() -> None:
    """Gateways send `data:image/png;base64,...` with the `=` padding stripped."""
    raw = _png()
    value = "data:image/png;base64," + base64.b64encode(raw).decode().rstrip("=")
    assert decode_b64(value) == raw


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_base64_with_mime_line_breaks_decodes(newline: str) -> None:
    """MIME encoders break base64 every 76 characters; the bytes are the same."""
    raw = _png(64, 64)
    text = base64.b64encode(raw).decode()
    wrapped = newline.join(text[i : i + 76] for i in range(0, len(text), 76))
    assert decode_b64(wrapped) == raw


@pytest.mark.parametrize("value", ["not*base64!", "é" * 8, "abcde"])
def test_corrupt_base64_is_an_image_error(value: str) -> None:
    with pytest.raises(ImageError, match="base64"):
        decode_b64(value)


def test_truncated_png_does_not_pass_inspection() -> None:
    with pytest.raises(ImageError):
        inspect_image(_png(64, 64)[:-40])


@pytest.mark.parametrize("cut", [1, 4, 5, 12, 13])
def test_a_png_cut_anywhere_in_its_tail_does_not_pass(cut: int) -> None:
    """Down to the last byte of IEND's checksum, which Pillow's verify does not read."""
    with pytest.raises(ImageError, match="damaged image"):
        inspect_image(_png(64, 64)[:-cut])


@pytest.mark.parametrize("where", ["IHDR", "IDAT", "IEND"])
def test_a_flipped_bit_in_any_png_chunk_is_caught(where: str) -> None:
    """Every chunk's CRC is checked, header to IEND."""
    raw = bytearray(_png(48, 40))
    at = raw.index(where.encode()) + 4  # first byte of the chunk's data (or its CRC for IEND)
    raw[at] ^= 0x01
    with pytest.raises(ImageError, match="checksum"):
        inspect_image(bytes(raw))


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
def test_png_inspection_agrees_with_pillow(mode: str) -> None:
    buffer = io.BytesIO()
    Image.new(mode, (333, 77)).save(buffer, "PNG", compress_level=1)
    info = inspect_image(buffer.getvalue())
    assert (info.format, info.width, info.height) == ("png", 333, 77)
    assert info.alpha is (mode == "RGBA")


def test_png_signature_followed_by_garbage_is_an_image_error() -> None:
    with pytest.raises(ImageError, match="damaged image"):
        inspect_image(b"\x89PNG\r\n\x1a\n" + b"not a chunk at all, nothing like IHDR")


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"", "empty file"), (b"plain text, no image", "not an image")],
)
def test_empty_and_unknown_bytes_say_so(data: bytes, reason: str) -> None:
    with pytest.raises(ImageError, match=reason):
        inspect_image(data)


def test_a_truncated_jpeg_fails_when_decoded_and_passes_a_header_read() -> None:
    """Outputs are decoded in full; manifest sources only have their headers read."""
    buffer = io.BytesIO()
    Image.new("RGB", (200, 200), (10, 200, 30)).save(buffer, "JPEG")
    cut = buffer.getvalue()[:-400]
    with pytest.raises(ImageError, match="damaged image"):
        inspect_image(cut)
    assert inspect_image(cut, decode=False).format == "jpeg"


def test_an_image_as_asked_has_no_mismatch() -> None:
    info = inspect_image(_png(32, 16))
    assert (info.format, info.width, info.height) == ("png", 32, 16)
    assert check_expected(info, Expected(format="png", size=Size(32, 16))) is None
    assert check_expected(info, Expected()) is None


def test_size_and_format_mismatch_is_described_not_raised() -> None:
    """Another size or format is a fact about a paid image, stated in the asked-for terms."""
    info = inspect_image(_png(32, 16))
    wrong_format = check_expected(info, Expected(format="jpeg"))
    assert wrong_format == Mismatch(asked="jpeg", got="png")
    wrong_size = check_expected(info, Expected(size=Size(1024, 1024)))
    assert wrong_size == Mismatch(asked="1024x1024", got="32x16")
    assert str(wrong_size) == "asked for 1024x1024, got 32x16"
    both = check_expected(info, Expected(format="webp", size=Size(64, 64)))
    assert both == Mismatch(asked="64x64 webp", got="32x16 png")


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, Expected()),
        ({"size": "auto", "output_format": "png"}, Expected(format="png")),
        (
            {"size": "1536x1024", "output_format": "jpg"},
            Expected(format="jpeg", size=Size(1536, 1024)),
        ),
    ],
)
def test_what_a_job_asks_for_is_read_from_its_params(
    params: dict[str, str], expected: Expected
) -> None:
    assert Expected.from_params(params) == expected
