"""Source image references: local files, ``http(s)`` URLs and ``data:`` URLs.

Local files and data URLs are read once, opened with Pillow (header + ``verify``) and hashed
with sha256; URLs are accepted as written and never fetched while validating. Results are cached
per reference and per absolute path, so a thousand jobs sharing one source read it once.

Accepted formats and limits are OpenAI's for image inputs: PNG, JPEG or WebP,
under 50 MB each; a data URL at most 20,971,520 characters; a mask needs an alpha channel.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from runner.files.images import ImageError, decode_b64, inspect_image
from runner.models import SourceImage

MAX_SOURCE_BYTES = 50 * 1024 * 1024
MAX_DATA_URL_CHARS = 20_971_520
#: The formats the API accepts as sources.
ACCEPTED_FORMATS = frozenset({"png", "jpeg", "webp"})
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
    return source_facts(data)


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
        data = decode_b64(payload)
    except ImageError:
        return "data URL payload is not valid base64"
    facts = source_facts(data)
    if isinstance(facts, str):
        return facts
    if media != f"image/{facts.format}":
        return f"data URL says {media} but holds {facts.format.upper()} data"
    return Resolved(SourceImage(kind="data", ref=ref, sha256=facts.sha256), facts)


def source_facts(data: bytes) -> ImageFacts | str:
    """Identify and verify a source image's bytes; return facts or why they are unusable."""
    try:
        info = inspect_image(data, decode=False)
    except ImageError as exc:
        return str(exc)
    if info.format not in ACCEPTED_FORMATS:
        return f"{info.format.upper()} images are not accepted; use PNG, JPEG or WebP"
    digest = hashlib.sha256(data).hexdigest()
    return ImageFacts(
        sha256=digest, format=info.format, width=info.width, height=info.height, alpha=info.alpha
    )


def show_ref(ref: str) -> str:
    """A reference short enough for a message (data URLs can be megabytes)."""
    return ref if len(ref) <= 60 else ref[:57] + "..."
