"""The Files and Batches calls of OpenAI's API, over the route's own client.

Every failure becomes an :class:`~runner.errors.AttemptError` classified by the tables of
:mod:`runner.http.classify`, as a synchronous request's would: a 429 or 5xx is retryable, a
bad key stops the route. Downloads are streamed to disk, never held whole in memory.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx

from runner.errors import AttemptError
from runner.files.atomic import temporary_name
from runner.http.classify import classify_error, translated
from runner.http.client import ApiClient
from runner.models import Outcome

#: Remote batch statuses after which nothing more happens to it.
TERMINAL = frozenset({"completed", "expired", "cancelled", "failed"})
#: The one completion window the provider offers.
COMPLETION_WINDOW = "24h"
#: Page size when listing batches (the most the provider allows).
LIST_LIMIT = 100
#: Bytes read at a time from a downloaded file's stream.
CHUNK = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteFile:
    """A file on the provider (OpenAI's ``File`` object: the fields we read)."""

    id: str
    filename: str
    purpose: str
    bytes: int = 0

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> RemoteFile:
        return cls(
            id=str(body["id"]),
            filename=str(body.get("filename") or ""),
            purpose=str(body.get("purpose") or ""),
            bytes=int(body.get("bytes") or 0),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteState:
    """A remote batch as the provider reports it (OpenAI's ``Batch`` object: what we read)."""

    id: str
    status: str
    input_file_id: str
    created_at: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    request_counts: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    errors: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> RemoteState:
        errors = (body.get("errors") or {}).get("data") or []
        messages = "; ".join(str(e.get("message") or e.get("code") or e) for e in errors)
        counts = body.get("request_counts") or {}
        return cls(
            id=str(body["id"]),
            status=str(body.get("status") or ""),
            input_file_id=str(body.get("input_file_id") or ""),
            created_at=int(body.get("created_at") or 0),
            output_file_id=body.get("output_file_id") or None,
            error_file_id=body.get("error_file_id") or None,
            request_counts={k: int(v) for k, v in counts.items() if isinstance(v, int)},
            metadata={str(k): str(v) for k, v in (body.get("metadata") or {}).items()},
            errors=messages or None,
        )


class RemoteClient:
    """Files and Batches on one route (its :class:`ApiClient` carries the key)."""

    def __init__(self, api: ApiClient) -> None:
        self._api = api

    async def upload(self, path: Path, *, filename: str, purpose: str, mime: str) -> RemoteFile:
        """Upload the file at ``path`` (streamed) as ``filename`` with ``purpose``."""
        with path.open("rb") as handle:
            request = self._api.call(
                "POST",
                "/files",
                data={"purpose": purpose},
                files={"file": (filename, handle, mime)},
            )
            return RemoteFile.from_json(await self._json(request))

    async def upload_bytes(
        self, data: bytes, *, filename: str, purpose: str, mime: str
    ) -> RemoteFile:
        """Upload ``data`` as ``filename`` with ``purpose``."""
        request = self._api.call(
            "POST", "/files", data={"purpose": purpose}, files={"file": (filename, data, mime)}
        )
        return RemoteFile.from_json(await self._json(request))

    async def files(self, purpose: str) -> AsyncIterator[RemoteFile]:
        """Every file with ``purpose``, newest first (page after page)."""
        after: str | None = None
        while True:
            params: dict[str, str | int] = {"purpose": purpose, "order": "desc"}
            if after is not None:
                params["after"] = after
            page = await self._json(self._api.call("GET", "/files", params=params))
            items = [RemoteFile.from_json(item) for item in page.get("data") or []]
            for item in items:
                yield item
            if not items or not page.get("has_more"):
                return
            after = items[-1].id

    async def find_file(self, filename: str, purpose: str) -> RemoteFile | None:
        """Our file named ``filename`` with ``purpose``, if the provider has it."""
        async for item in self.files(purpose):
            if item.filename == filename:
                return item
        return None

    async def create(
        self, *, input_file_id: str, endpoint: str, metadata: dict[str, str]
    ) -> RemoteState:
        """Create a remote batch of the lines in ``input_file_id``."""
        body = {
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "completion_window": COMPLETION_WINDOW,
            "metadata": metadata,
        }
        return RemoteState.from_json(
            await self._json(self._api.call("POST", "/batches", json_body=body))
        )

    async def retrieve(self, remote_id: str) -> RemoteState:
        return RemoteState.from_json(
            await self._json(self._api.call("GET", f"/batches/{remote_id}"))
        )

    async def cancel(self, remote_id: str) -> RemoteState:
        return RemoteState.from_json(
            await self._json(self._api.call("POST", f"/batches/{remote_id}/cancel"))
        )

    async def batches(self) -> AsyncIterator[RemoteState]:
        """Every remote batch of the account, newest first (page after page, ``after``)."""
        after: str | None = None
        while True:
            params: dict[str, str | int] = {"limit": LIST_LIMIT}
            if after is not None:
                params["after"] = after
            page = await self._json(self._api.call("GET", "/batches", params=params))
            items = [RemoteState.from_json(item) for item in page.get("data") or []]
            for item in items:
                yield item
            if not items or not page.get("has_more"):
                return
            after = items[-1].id

    async def find_batch(
        self, *, metadata: dict[str, str], input_file_id: str, since: int = 0
    ) -> RemoteState | None:
        """Our remote batch: the one with ``metadata`` and ``input_file_id``, if it exists.

        Args:
            since: stop looking at batches created before this (Unix seconds): ours is newer.
        """
        async for item in self.batches():
            if item.created_at and item.created_at < since:
                return None
            mine = all(item.metadata.get(k) == v for k, v in metadata.items())
            if mine and item.input_file_id == input_file_id:
                return item
        return None

    async def delete_file(self, file_id: str) -> None:
        """Delete one of our files (one already gone counts as deleted)."""
        try:
            await self._json(self._api.call("DELETE", f"/files/{file_id}"))
        except AttemptError as exc:
            if exc.status != 404:
                raise

    async def download(self, file_id: str, dest: Path) -> int:
        """Stream the content of ``file_id`` to ``dest`` (temporary file, then renamed);
        returns its size."""
        request = self._api.call("GET", f"/files/{file_id}/content")
        with translated():
            response = await self._api.send(request)
        size = 0
        try:
            if response.status_code != 200:
                with translated(response):
                    content = await response.aread()
                raise classify_error(response.status_code, response.headers, content)
            temp = dest.parent / temporary_name(dest.name)
            await anyio.Path(dest.parent).mkdir(parents=True, exist_ok=True)
            try:
                async with await anyio.open_file(temp, "wb") as out:
                    with translated(response):
                        async for chunk in response.aiter_bytes(CHUNK):
                            await out.write(chunk)
                            size += len(chunk)
                await anyio.Path(temp).rename(dest)
            except BaseException:
                await anyio.Path(temp).unlink(missing_ok=True)
                raise
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()
        return size

    async def _json(self, request: httpx.Request) -> dict[str, Any]:
        with translated():
            response = await self._api.send(request)
        try:
            with translated(response):
                content = await response.aread()
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()
        if not 200 <= response.status_code < 300:
            raise classify_error(response.status_code, response.headers, content)
        try:
            body = json.loads(content)
        except ValueError as exc:
            raise AttemptError(
                Outcome.BAD_RESPONSE, f"{request.url.path}: answer is not JSON: {exc}"
            ) from exc
        if not isinstance(body, dict):
            raise AttemptError(Outcome.BAD_RESPONSE, f"{request.url.path}: answer is not an object")
        return body
