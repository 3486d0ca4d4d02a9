"""Decoding and verifying returned images, and writing them atomically."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image

from runner.errors import AttemptError
from runner.files.images import (
    check_expected,
    decode_b64,
    inspect_image,
    sweep_temporaries,
    write_atomic,
)
from runner.models import Outcome
from runner.routes.sizes import Size


def _png(width: int = 32, height: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def test_gateway_data_url_without_padding_decodes() -> None:
    """laozhang sends `data:image/png;base64,...` with the `=` padding stripped (seeds/003)."""
    raw = _png()
    value = "data:image/png;base64," + base64.b64encode(raw).decode().rstrip("=")
    assert decode_b64(value) == raw


def test_corrupt_base64_is_a_bad_response() -> None:
    with pytest.raises(AttemptError) as info:
        decode_b64("not*base64!")
    assert info.value.outcome is Outcome.BAD_RESPONSE


def test_truncated_png_does_not_pass_inspection() -> None:
    with pytest.raises(AttemptError) as info:
        inspect_image(_png(64, 64)[:-40])
    assert info.value.outcome is Outcome.BAD_RESPONSE


@pytest.mark.parametrize("where", ["IHDR", "IDAT", "IEND"])
def test_a_flipped_bit_in_any_png_chunk_is_caught(where: str) -> None:
    """Every chunk's CRC is checked, as Pillow's verify does, header to IEND."""
    raw = bytearray(_png(48, 40))
    at = raw.index(where.encode()) + 4  # first byte of the chunk's data (or its CRC for IEND)
    raw[at] ^= 0x01
    with pytest.raises(AttemptError, match="CRC") as info:
        inspect_image(bytes(raw))
    assert info.value.outcome is Outcome.BAD_RESPONSE


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
def test_png_inspection_agrees_with_pillow(mode: str) -> None:
    buffer = io.BytesIO()
    Image.new(mode, (333, 77)).save(buffer, "PNG", compress_level=1)
    info = inspect_image(buffer.getvalue())
    assert (info.format, info.width, info.height) == ("png", 333, 77)


def test_png_signature_followed_by_garbage_is_a_bad_response() -> None:
    with pytest.raises(AttemptError) as info:
        inspect_image(b"\x89PNG\r\n\x1a\n" + b"not a chunk at all, nothing like IHDR")
    assert info.value.outcome is Outcome.BAD_RESPONSE


def test_size_and_format_mismatch_is_a_bad_response() -> None:
    info = inspect_image(_png(32, 16))
    assert (info.format, info.width, info.height) == ("png", 32, 16)
    check_expected(info, fmt="png", size=Size(32, 16))
    with pytest.raises(AttemptError):
        check_expected(info, fmt="jpeg", size=None)
    with pytest.raises(AttemptError):
        check_expected(info, fmt=None, size=Size(1024, 1024))


def test_atomic_write_leaves_the_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "batch" / "1-0.png"
    digest = write_atomic(target, b"abc")
    assert target.read_bytes() == b"abc"
    assert digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert [p.name for p in target.parent.iterdir()] == ["1-0.png"]


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_sweep_removes_temporaries_a_killed_run_left(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    stale = tmp_path / "b" / f".tmp-{_dead_pid()}-1-0.png"
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 600, time.time() - 600))
    (tmp_path / "b" / "2-0.png").write_bytes(b"whole")
    assert sweep_temporaries(tmp_path) == 1
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["2-0.png"]


def test_sweep_leaves_a_live_writers_temporary_alone(tmp_path: Path) -> None:
    """Another worker sharing the directory may be writing that file right now."""
    mine = tmp_path / f".tmp-{os.getpid()}-3-0.png"
    mine.write_bytes(b"being written")
    os.utime(mine, (time.time() - 600, time.time() - 600))
    fresh = tmp_path / f".tmp-{_dead_pid()}-4-0.png"
    fresh.write_bytes(b"just written")
    assert sweep_temporaries(tmp_path) == 0
    assert mine.exists()
    assert fresh.exists()
