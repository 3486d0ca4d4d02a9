"""Loading source images given by reference: data URLs, the sandbox's own file URLs, http(s).

A URL that points at this sandbox's own ``/<profile>/files/…`` is served from memory, which
is what makes "edit the image the chat route just linked" work in-process too; other URLs
are downloaded (in tests: another loopback server).
"""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import urlsplit

import anyio
import httpx

from runner.sandbox.errors import ApiError, invalid_request
from runner.sandbox.file_store import FilePurpose, UploadStore
from runner.sandbox.files import FileStore
from runner.sandbox.parsing import MAX_IMAGE_BYTES, FileRef, SourceRef

#: Purposes a file given as an image input's ``file_id`` may have been uploaded with (an
#: image for a model to look at: ``vision``, or the catch-all ``user_data``).
IMAGE_FILE_PURPOSES = frozenset({FilePurpose.VISION, FilePurpose.USER_DATA})

_DATA_URL = re.compile(r"^data:([\w/+.-]*)(;[\w=-]+)*;base64,(.*)$", re.DOTALL)
_OWN_FILE = re.compile(r"^/(?:openai|laozhang)/files/([^/]+)$")


def _download_failed(param: str, why: str) -> ApiError:
    return invalid_request(
        f"Failed to download image from the URL given in '{param}': {why}.",
        param=param,
        code="failed_to_download_image",
    )


def decode_data_url(ref: str, param: str) -> bytes:
    """Bytes of a ``data:<mime>;base64,…`` URL (missing ``=`` padding is tolerated).

    Raises:
        ApiError: 400 ``invalid_base64_image`` when it is not valid base64.
    """
    match = _DATA_URL.match(ref)
    if match is None:
        raise invalid_request(
            f"Invalid data URL in '{param}'.", param=param, code="invalid_image_url"
        )
    payload = re.sub(r"\s", "", match.group(3))
    payload += "=" * (-len(payload) % 4)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise invalid_request(
            f"Invalid base64 image data in '{param}'.", param=param, code="invalid_base64_image"
        ) from None


class SourceLoader:
    """Turns :data:`SourceRef` values into image bytes.

    Args:
        files: the sandbox's served files (for URLs that point back at the sandbox).
        uploads: the Files API's files (for ``file_id`` references).
        timeout: seconds allowed for one download.
    """

    def __init__(self, files: FileStore, uploads: UploadStore, timeout: float) -> None:
        self._files = files
        self._uploads = uploads
        self._timeout = timeout

    async def load(self, ref: SourceRef, *, param: str, origin: str) -> bytes:
        """The bytes behind ``ref``.

        Args:
            ref: uploaded bytes, a data URL or an http(s) URL.
            param: the request field it came from (named in errors).
            origin: this sandbox's ``scheme://host:port``, as the client addressed it.

        Raises:
            ApiError: 400 when the reference cannot be loaded.
        """
        if isinstance(ref, bytes):
            return ref
        if isinstance(ref, FileRef):
            return await self._uploaded(ref, param)
        if ref.startswith("data:"):
            return decode_data_url(ref, param)
        parts = urlsplit(ref)
        if parts.scheme not in ("http", "https"):
            raise invalid_request(
                f"Invalid image URL in '{param}': expected https://… or a data URL.",
                param=param,
                code="invalid_image_url",
            )
        own = _OWN_FILE.match(parts.path)
        if own and f"{parts.scheme}://{parts.netloc}" == origin:
            stored = self._files.get(own.group(1))
            if stored is None:
                raise _download_failed(param, "HTTP 404")
            return stored.data
        return await self._download(ref, param)

    async def _uploaded(self, ref: FileRef, param: str) -> bytes:
        stored = self._uploads.get(ref.file_id)
        if stored is None:
            raise invalid_request(
                f"No such File object: {ref.file_id} (in '{param}').",
                param=param,
                code="invalid_file_id",
            )
        if stored.purpose not in IMAGE_FILE_PURPOSES or stored.size > MAX_IMAGE_BYTES:
            raise invalid_request(
                f"The file {ref.file_id} in '{param}' cannot be used as an image: upload it "
                "with purpose 'vision' or 'user_data', under 50 MB.",
                param=param,
                code="invalid_file_id",
            )
        return await anyio.Path(stored.path).read_bytes()

    async def _download(self, url: str, param: str) -> bytes:
        try:
            async with (
                httpx.AsyncClient(timeout=self._timeout, follow_redirects=True) as client,
                client.stream("GET", url) as response,
            ):
                if response.status_code != 200:
                    raise _download_failed(param, f"HTTP {response.status_code}")
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_IMAGE_BYTES:
                        raise _download_failed(param, "larger than 50 MB")
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.HTTPError as exc:
            raise _download_failed(param, type(exc).__name__) from exc
