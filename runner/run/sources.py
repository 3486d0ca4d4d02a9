"""Loading source images (local file, URL, data URL) into what a shape adapter sends."""

from __future__ import annotations

import base64
import mimetypes
from collections import OrderedDict
from pathlib import Path

import anyio
import httpx

from runner.errors import AttemptError
from runner.files.images import ImageError, decode_b64
from runner.http.download import download
from runner.models import Outcome, SourceImage
from runner.shapes.base import LoadedImage

MAX_SOURCE_BYTES = 50 * 1024 * 1024


class SourceLoader:
    """Loads and caches source images; many jobs often share one source file.

    Args:
        client: used for ``http(s)://`` sources (no provider credentials on it).
        need_bytes: multipart shapes need bytes; JSON shapes can pass URLs through.
        cache_bytes: cap on cached bytes (least recently used are dropped first).
    """

    def __init__(self, client: httpx.AsyncClient, *, cache_bytes: int = 64 * 1024 * 1024) -> None:
        self._client = client
        self._cache: OrderedDict[str, LoadedImage] = OrderedDict()
        self._cached = 0
        self._limit = cache_bytes

    async def load(self, source: SourceImage, *, need_bytes: bool) -> LoadedImage:
        key = f"{source.kind}:{source.sha256 or source.ref}:{need_bytes}"
        if (hit := self._cache.get(key)) is not None:
            self._cache.move_to_end(key)
            return hit
        loaded = await self._load(source, need_bytes=need_bytes)
        size = len(loaded.data or b"") + len(loaded.url)
        if size <= self._limit // 4:
            self._cache[key] = loaded
            self._cached += size
            while self._cached > self._limit:
                _, old = self._cache.popitem(last=False)
                self._cached -= len(old.data or b"") + len(old.url)
        return loaded

    async def _load(self, source: SourceImage, *, need_bytes: bool) -> LoadedImage:
        if source.kind == "url":
            if not need_bytes:
                return LoadedImage(data=None, mime="", filename="", url=source.ref)
            data = await download(self._client, source.ref, limit=MAX_SOURCE_BYTES)
            name = Path(httpx.URL(source.ref).path).name or "source"
            return _loaded(data, name)
        if source.kind == "data":
            header, _, payload = source.ref.partition(",")
            try:
                data = decode_b64(payload)
            except ImageError as exc:
                raise AttemptError(Outcome.INVALID_REQUEST, f"source data URL: {exc}") from exc
            mime = header.removeprefix("data:").split(";")[0] or "image/png"
            return LoadedImage(data=data, mime=mime, filename="source" + _ext(mime), url=source.ref)
        path = Path(source.ref)
        try:
            data = await anyio.Path(path).read_bytes()
        except OSError as exc:
            raise AttemptError(
                Outcome.INVALID_REQUEST, f"cannot read source image {path}: {exc}"
            ) from exc
        return _loaded(data, path.name)


def _loaded(data: bytes, filename: str) -> LoadedImage:
    mime = mimetypes.guess_type(filename)[0] or _sniff(data)
    url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return LoadedImage(data=data, mime=mime, filename=filename, url=url)


def _sniff(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def _ext(mime: str) -> str:
    return {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}.get(mime, "")
