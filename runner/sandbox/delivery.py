"""Responses that fail in transit: a reset before any byte, a body cut short.

Served by uvicorn (through :func:`runner.sandbox.connections.protocol_class`) the client sees
real transport errors. In-process (``httpx.ASGITransport``) there is no socket: a reset
raises ``ConnectionResetError`` out of the app, and a truncated body arrives short under a
``Content-Length`` that promised more.
"""

from __future__ import annotations

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from runner.sandbox.connections import ConnectionRegistry, reset

#: Upper bound on waiting for the server to notice a connection we closed ourselves.
_CLOSE_NOTICE_S = 1.0


async def _until_disconnected(receive: Receive) -> None:
    # The app must not return before uvicorn has seen the close, or uvicorn logs the
    # half-sent response as an application error.
    with anyio.move_on_after(_CLOSE_NOTICE_S):
        while (await receive())["type"] != "http.disconnect":
            pass


class ResetResponse(Response):
    """Reset the connection instead of answering."""

    def __init__(self, registry: ConnectionRegistry) -> None:
        super().__init__(status_code=500)
        self._registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = self._registry.get(scope.get("client"))
        if transport is None:
            raise ConnectionResetError("sandbox fault: connection reset (no socket in-process)")
        reset(transport)
        await _until_disconnected(receive)


class TruncatedResponse(Response):
    """Send the headers of the full body, then only its first ``keep`` bytes, then close."""

    def __init__(
        self,
        content: bytes,
        *,
        keep: int,
        status_code: int,
        headers: dict[str, str],
        media_type: str,
        registry: ConnectionRegistry,
    ) -> None:
        super().__init__(content, status_code=status_code, headers=headers, media_type=media_type)
        self._keep = keep
        self._registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        part = bytes(self.body[: self._keep])
        transport = self._registry.get(scope.get("client"))
        if transport is None:
            await send({"type": "http.response.body", "body": part, "more_body": False})
            return
        await send({"type": "http.response.body", "body": part, "more_body": True})
        transport.close()
        await _until_disconnected(receive)
