"""Source image references: local files, ``http(s)`` URLs and ``data:`` URLs.

Local files and data URLs are read once, opened with Pillow (header + ``verify``) and hashed
with sha256; URLs are accepted as written and never fetched while validating. Results are cached
per reference and per absolute path, so a thousand jobs sharing one source read it once.

Accepted formats and limits follow ``shared/reference/openai-api.md`` §2: PNG, JPEG or WebP,
under 50 MB each; a data URL at most 20,971,520 characters; a mask needs an alpha channel.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from PIL import Image, UnidentifiedImageError

from runner.models import SourceImage

MAX_SOURCE_BYTES = 50 * 1024 * 1024
MAX_DATA_URL_CHARS = 20_971_520
#: Pillow format name → the name users know.
ACCEPTED_FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}
#: How many decoded data URLs to remember (they can be megabytes each).
DATA_CACHE_SIZE = 64

# Two or more letters, so a Windows drive ("C:\\…") reads as a path, not a scheme.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")
_MEDIA_ALIASES = {"image/jpg": "image/jpeg"}


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """What validation learnt about one source image."""

    sha256: str
    format: str
    width: int
    height: int
    alpha: bool


@dataclass(frozen=True, slots=True)
class Resolved:
    """A usable source: the reference to store, and facts when the bytes were read."""

    source: SourceImage
    facts: ImageFacts | None


class SourceResolver:
    """Resolves and checks image references of one manifest, with caches.

    Memory: one entry per distinct local reference and per distinct absolute path, plus at
    most ``DATA_CACHE_SIZE`` data URLs.
    """

    def __init__(self, base_dir: str) -> None:
        """Args:
        base_dir: absolute folder that relative paths are resolved against (the manifest's).
        """
        self._base = base_dir
        self._refs: dict[str, tuple[str, ImageFacts | str]] = {}
        self._paths: dict[str, ImageFacts | str] = {}
        self._data: dict[str, Resolved | str] = {}

    def resolve(self, ref: str) -> Resolved | str:
        """Check one reference; return it resolved, or why it cannot be used."""
        if not ref or ref.isspace():
            return "empty image reference"
        match = _SCHEME.match(ref)
        if match is None:
            return self._local(ref)
        scheme = match.group(1).lower()
        if scheme == "data":
            return self._data_url(ref)
        if scheme in ("http", "https"):
            return _url(ref)
        return f"unsupported scheme {scheme!r}: use a local path, an http(s) URL or a data: URL"

    def _local(self, ref: str) -> Resolved | str:
        cached = self._refs.get(ref)
        if cached is None:
            path = os.path.abspath(os.path.join(self._base, ref))
            facts = self._paths.get(path)
            if facts is None:
                facts = self._paths[path] = _read_file(path)
            cached = self._refs[ref] = (path, facts)
        path, facts = cached
        if isinstance(facts, str):
            return facts
        return Resolved(SourceImage(kind="path", ref=path, sha256=facts.sha256), facts)

    def _data_url(self, ref: str) -> Resolved | str:
        cached = self._data.get(ref)
        if cached is None:
            cached = _decode_data_url(ref)
            if len(self._data) >= DATA_CACHE_SIZE:
                del self._data[next(iter(self._data))]
            self._data[ref] = cached
        return cached


def _url(ref: str) -> Resolved | str:
    try:
        host = urlsplit(ref).hostname
    except ValueError as exc:
        return f"malformed URL: {exc}"
    if not host:
        return "URL has no host"
    return Resolved(SourceImage(kind="url", ref=ref, sha256=None), None)


def _read_file(path: str) -> ImageFacts | str:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_SOURCE_BYTES + 1)
    except FileNotFoundError:
        return f"file not found ({path})"
    except IsADirectoryError:
        return f"is a directory, not an image file ({path})"
    except PermissionError:
        return f"cannot read: permission denied ({path})"
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc} ({path})"
    if len(data) > MAX_SOURCE_BYTES:
        return f"larger than {MAX_SOURCE_BYTES // (1024 * 1024)} MB ({path})"
    return inspect_image(data)


def _decode_data_url(ref: str) -> Resolved | str:
    if len(ref) > MAX_DATA_URL_CHARS:
        return f"data URL is longer than {MAX_DATA_URL_CHARS:,} characters"
    head, comma, payload = ref.partition(",")
    if not comma:
        return "malformed data URL: no ',' before the data"
    media, *flags = head[len("data:") :].split(";")
    media = media.strip().lower()
    media = _MEDIA_ALIASES.get(media, media)
    if not media.startswith("image/"):
        return "data URL needs an image media type, e.g. data:image/png;base64,…"
    if "base64" not in (flag.strip().lower() for flag in flags):
        return "data URL must be base64-encoded (data:image/png;base64,…)"
    try:
        data = base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
    except (binascii.Error, ValueError):
        return "data URL payload is not valid base64"
    facts = inspect_image(data)
    if isinstance(facts, str):
        return facts
    if media != f"image/{facts.format}":
        return f"data URL says {media} but holds {facts.format.upper()} data"
    return Resolved(SourceImage(kind="data", ref=ref, sha256=facts.sha256), facts)


def inspect_image(data: bytes) -> ImageFacts | str:
    """Identify and verify image bytes with Pillow; return facts or why they are unusable."""
    if not data:
        return "empty file, not an image"
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt, (width, height) = image.format, image.size
            alpha = "A" in image.getbands() or "a" in image.getbands()
            alpha = alpha or "transparency" in image.info
            image.verify()
    except UnidentifiedImageError:
        return "not an image (Pillow cannot identify the format)"
    except Image.DecompressionBombError:
        return "image has too many pixels"
    except Exception as exc:  # Pillow reports damaged files with many exception types.
        return f"damaged image: {exc}"
    if fmt not in ACCEPTED_FORMATS:
        return f"{fmt} images are not accepted; use PNG, JPEG or WebP"
    digest = hashlib.sha256(data).hexdigest()
    return ImageFacts(
        sha256=digest, format=ACCEPTED_FORMATS[fmt], width=width, height=height, alpha=alpha
    )


def show_ref(ref: str) -> str:
    """A reference short enough for a message (data URLs can be megabytes)."""
    return ref if len(ref) <= 60 else ref[:57] + "..."
