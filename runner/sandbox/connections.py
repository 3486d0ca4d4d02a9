"""Reaching the client's socket from inside the app, to emulate resets and cut-off bodies.

ASGI gives an application no handle on its connection, and a server answers any exception
with a clean 500. To make a client see a real transport error, the sandbox runs uvicorn with
a protocol subclass that records each connection's transport by peer address; the app finds
its own connection through ``scope["client"]`` and resets or closes it.
"""

from __future__ import annotations

import asyncio
import socket
import struct

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

Peer = tuple[str, int]


class ConnectionRegistry:
    """Live transports by peer address (filled only when served by :func:`protocol_class`)."""

    def __init__(self) -> None:
        self._transports: dict[Peer, asyncio.Transport] = {}

    def add(self, peer: Peer, transport: asyncio.Transport) -> None:
        """Remember ``transport`` as the connection of ``peer``."""
        self._transports[peer] = transport

    def discard(self, peer: Peer, transport: asyncio.Transport) -> None:
        """Forget ``peer``'s connection (if it is still ``transport``)."""
        if self._transports.get(peer) is transport:
            del self._transports[peer]

    def get(self, peer: object) -> asyncio.Transport | None:
        """The transport of ``peer`` (an ASGI ``scope["client"]``), if the server registered it."""
        if not isinstance(peer, tuple | list) or len(peer) != 2:
            return None
        return self._transports.get((str(peer[0]), int(peer[1])))


def protocol_class(registry: ConnectionRegistry) -> type[HttpToolsProtocol]:
    """uvicorn's llhttp protocol, recording its transport in ``registry``."""

    class SandboxProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if self.client is not None:
                registry.add(self.client, transport)

        def connection_lost(self, exc: Exception | None) -> None:
            if self.client is not None:
                registry.discard(self.client, self.transport)
            super().connection_lost(exc)

    return SandboxProtocol


def reset(transport: asyncio.Transport) -> None:
    """Drop the connection with a TCP RST (linger 0), so the peer sees 'connection reset'."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
