"""A small recording HTTP/1.1 server on 127.0.0.1 that writes exactly the bytes a test gives.

Each connection runs a handler playing one server behaviour (keep-alive, hang-ups, cut bodies,
garbage, TLS...) and every request read is recorded, so a test checks both sides: what the
caller got, and what the server saw (a request is never sent twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


@dataclass
class Received:
    """One request as the server read it (header names lower-cased)."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    scheme: str
    port: int = 0
    #: Connections accepted, and every request read, in order.
    connections: int = 0
    requests: list[Received] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def targets(self) -> list[str]:
        return [request.target for request in self.requests]


@dataclass
class Peer:
    """One accepted connection, as its handler sees it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    server: Server

    async def request(self) -> Received | None:
        """The next request (recorded on the server), or ``None`` once the client hung up."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            return None
        line, *lines = head[:-4].decode("latin-1").split("\r\n")
        method, target, _ = line.split(" ")
        headers: dict[str, str] = {}
        for header in lines:
            name, _, value = header.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            body = await self._chunked()
        else:
            body = b""
        received = Received(method, target, headers, body)
        self.server.requests.append(received)
        return received

    async def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")  # no trailers: the closing empty line
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def until_hangup(self) -> None:
        """Say nothing more; return once the client has closed the connection."""
        await self.reader.read()


Handler = Callable[[Peer], Awaitable[None]]


@contextlib.asynccontextmanager
async def serve(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    """A server on 127.0.0.1 running ``handler`` for each connection (closed when it returns)."""
    server = Server("https" if tls else "http")
    tasks: set[asyncio.Task[Any]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.connections += 1
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(Peer(reader, writer, server))
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client went away mid-exchange (some tests are about that), or teardown
        finally:
            writer.close()
            tasks.discard(task)

    listener = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=tls)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()
        if tasks:
            # Handlers end when their client hangs up; any still running are stopped.
            _, pending = await asyncio.wait(set(tasks), timeout=2)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await listener.wait_closed()


def response(
    body: bytes = b"ok",
    *,
    status: int = 200,
    reason: str = "OK",
    headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """A whole response with a ``Content-Length``."""
    head = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}"]
    head += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def replying(reply: Callable[[Received], bytes]) -> Handler:
    """A keep-alive handler: answers each request with ``reply(request)`` until hang-up."""

    async def handler(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            await peer.send(reply(request))

    return handler


def echo(request: Received) -> bytes:
    return response(request.target.encode())


def certificate(where: Path) -> Path:
    """A fresh self-signed certificate for 127.0.0.1 and localhost; its key beside it."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl CLI is needed to make a test certificate")
    cert, key = where / "cert.pem", where / "key.pem"
    options = (
        "req -x509 -nodes -days 1 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1"
        " -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost"
    )
    subprocess.run(
        [openssl, *options.split(), "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert


def server_tls(cert: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, cert.with_name("key.pem"))
    return context
