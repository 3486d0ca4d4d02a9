"""Output images: decode base64 (gateway quirks included), verify, hash and write atomically."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from runner.errors import AttemptError
from runner.files.procs import pid_alive
from runner.models import Outcome
from runner.routes.sizes import Size

#: Our file extension for each Pillow format name.
EXTENSIONS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp", "GIF": "gif"}
TMP_PREFIX = ".tmp-"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageInfo:
    format: str  # "png" | "jpeg" | "webp" | "gif"
    width: int
    height: int


def decode_b64(value: str) -> bytes:
    """Decode an image's base64 as providers send it.

    Gateways send ``data:image/png;base64,…`` and drop the ``=`` padding (seeds/003); both are
    repaired here before a strict decode.
    """
    if value.startswith("data:"):
        _, _, value = value.partition(",")
    value = value.strip()
    value += "=" * (-len(value) % 4)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AttemptError(Outcome.BAD_RESPONSE, f"image base64 does not decode: {exc}") from exc


def inspect_image(data: bytes) -> ImageInfo:
    """Check that ``data`` is a complete image and report its format and size.

    PNGs are verified chunk by chunk (every CRC, through to ``IEND``) without expanding the
    pixels, which would hold another full-size copy of the image in memory (what Pillow's
    ``verify`` does, in a fraction of its time); other formats are fully decoded.

    Raises:
        AttemptError: ``bad_response`` when the bytes are not a complete image.
    """
    if data.startswith(PNG_SIGNATURE):
        return _inspect_png(data)
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt = EXTENSIONS.get(image.format or "", (image.format or "unknown").lower())
            info = ImageInfo(format=fmt, width=image.width, height=image.height)
            if image.format == "PNG":
                image.verify()
            else:
                image.load()
            return info
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise AttemptError(Outcome.BAD_RESPONSE, f"image does not decode: {exc}") from exc


def _inspect_png(data: bytes) -> ImageInfo:
    view = memoryview(data)
    at, size, first = len(PNG_SIGNATURE), len(data), True
    width = height = 0
    while True:
        if at + 12 > size:
            raise _bad("PNG truncated before IEND")
        length, kind = struct.unpack_from(">I4s", view, at)
        end = at + 8 + length
        if end + 4 > size:
            raise _bad(f"PNG truncated in its {kind!r} chunk")
        if zlib.crc32(view[at + 4 : end]) != struct.unpack_from(">I", view, end)[0]:
            raise _bad(f"PNG {kind!r} chunk fails its CRC")
        if first:
            if kind != b"IHDR" or length < 8:
                raise _bad("PNG does not start with IHDR")
            width, height = struct.unpack_from(">II", view, at + 8)
            first = False
        if kind == b"IEND":
            return ImageInfo(format="png", width=width, height=height)
        at = end + 4


def _bad(reason: str) -> AttemptError:
    return AttemptError(Outcome.BAD_RESPONSE, f"image does not decode: {reason}")


def check_expected(info: ImageInfo, *, fmt: str | None, size: Size | None) -> None:
    """Raise ``bad_response`` when the image is not what was asked for."""
    wanted = "jpeg" if fmt == "jpg" else fmt
    if wanted and info.format != wanted:
        raise AttemptError(Outcome.BAD_RESPONSE, f"asked for {wanted}, got {info.format}")
    if size and (info.width, info.height) != (size.width, size.height):
        raise AttemptError(
            Outcome.BAD_RESPONSE,
            f"asked for {size}, got {info.width}x{info.height}",
        )


def write_atomic(path: str | Path, data: bytes, *, fsync: bool = False) -> str:
    """Write ``data`` to ``path`` via a temporary file and a rename; return its sha256.

    A killed process leaves either no file or the whole file, never a partial one; stray
    temporaries carry :data:`TMP_PREFIX` so a restarted run can sweep them. ``fsync`` also
    makes the bytes durable against power loss before the rename (``IMAGERUN_FSYNC=1``); it is
    off by default because the database itself commits with ``synchronous=NORMAL``, which is
    crash-safe but not power-loss durable either, and a per-file fsync costs milliseconds.
    """
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f"{TMP_PREFIX}{os.getpid()}-{name}")
    try:
        fd = os.open(tmp, _CREATE, 0o666)
    except FileNotFoundError:  # the batch's first image (or its folder was removed)
        os.makedirs(folder, exist_ok=True)
        fd = os.open(tmp, _CREATE, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def sweep_temporaries(root: Path, *, older_than: float = 60.0) -> int:
    """Remove temporary files a killed run left under ``root``; returns how many.

    Another live worker may be writing into the same directory, so only temporaries whose
    writer (the pid in the name) is gone from this machine *and* that have not been touched
    for ``older_than`` seconds are removed.
    """
    if not root.is_dir():
        return 0
    removed = 0
    cutoff = time.time() - older_than
    for tmp in root.rglob(f"{TMP_PREFIX}*"):
        pid = tmp.name.removeprefix(TMP_PREFIX).split("-", 1)[0]
        try:
            stale = tmp.stat().st_mtime < cutoff and not (pid.isdigit() and pid_alive(int(pid)))
        except FileNotFoundError:
            continue
        if stale:
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed
