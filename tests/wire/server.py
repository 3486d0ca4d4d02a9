"""A raw TCP server for the wire zoo: each case writes the exact bytes a real server sent.

No HTTP library runs on this side. The server reads a request head itself, hands it to the
case, and the case reads the body (or refuses to), then writes its answer byte for byte: a
doubled ``Content-Length``, bare-LF lines, a CDN's HTML 524, an early 401 while the client is
still uploading. Every request that reaches the server is logged as a :class:`Seen`, with what
the server did about it; ``billed`` is what a provider behind it would have charged for.

The server runs on its own event loop in a thread (:func:`running_zoo`), so nothing the client
does on the test's loop can slow its timing down, and nothing it does can help the client.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Longest request head the server reads.
MAX_HEAD = 256 * 1024
#: What a provider reports for one image (priced by the route's token table).
USAGE = {
    "input_tokens": 12,
    "input_tokens_details": {"text_tokens": 12, "image_tokens": 0},
    "output_tokens": 272,
    "total_tokens": 284,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Head:
    """A request line and its headers (names lower-cased, in order, duplicates kept)."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)

    @property
    def proxied(self) -> bool:
        """The request came as to a forward proxy (``POST http://host/path``)."""
        return self.target.startswith(("http://", "https://"))

    @property
    def path(self) -> str:
        target = self.target
        if self.proxied:  # the zoo answers as the origin behind the proxy would
            target = "/" + target.split("://", 1)[1].partition("/")[2]
        return target.partition("?")[0]


@dataclass(slots=True, kw_only=True)
class Seen:
    """One request that reached the server, and what the server did about it."""

    number: int
    connection: int
    method: str
    path: str
    client_request_id: str | None
    at: float
    head: Head
    body_bytes: int = 0
    body_complete: bool = False
    #: Status of the final answer written (``None``: none written).
    status: int | None = None
    #: The ``x-request-id`` written in the answer's head.
    request_id: str | None = None
    #: A provider behind this server did the work and charged for it.
    billed: bool = False
    #: A decodable image went out in the answer (inline, or as a URL the server serves).
    delivered: bool = False

    @property
    def api(self) -> bool:
        return self.path.startswith("/v1/")


class Closed(Exception):
    """The client went away."""


class Conn:
    """One accepted connection, read and written by hand."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.number = number
        self.closed = False
        #: Requests served on this connection so far.
        self.served = 0
        #: Close the connection when no next request comes within this many seconds.
        self.idle_timeout: float | None = None
        #: Close the connection, unanswered, as the next request on it arrives: the server's
        #: keep-alive timer ran out just as the client reused the connection.
        self.close_on_next = False

    async def head(self) -> Head | None:
        """The next request head; ``None`` when the client closed or went quiet for good.

        Blank lines before a request line are skipped, as servers are told to.
        """
        buffer = b""
        while True:
            try:
                line = await self.reader.readuntil(b"\n")
            except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
                return None
            if not buffer and line in (b"\r\n", b"\n"):
                continue
            buffer += line
            if line in (b"\r\n", b"\n"):
                break
            if len(buffer) > MAX_HEAD:
                return None
        lines = buffer.decode("latin-1").splitlines()
        method, target, _ = lines[0].split(" ", 2)
        headers = []
        for raw in lines[1:]:
            if raw:
                name, _, value = raw.partition(":")
                headers.append((name.strip().lower(), value.strip()))
        return Head(method=method, target=target, headers=tuple(headers))

    async def body(self, head: Head, seen: Seen) -> bytes:
        """Read the whole request body (``Content-Length`` or chunked); record its size."""
        chunks: list[bytes] = []
        try:
            if (head.get("transfer-encoding") or "").lower() == "chunked":
                while True:
                    size = int((await self.reader.readuntil(b"\n")).split(b";")[0], 16)
                    if size == 0:
                        while (await self.reader.readuntil(b"\n")) not in (b"\r\n", b"\n"):
                            pass
                        break
                    chunks.append(await self.reader.readexactly(size))
                    seen.body_bytes += size
                    await self.reader.readuntil(b"\n")
            else:
                length = int(head.get("content-length") or 0)
                while length > 0:
                    chunk = await self.reader.read(min(length, 1 << 16))
                    if not chunk:
                        raise Closed
                    chunks.append(chunk)
                    seen.body_bytes += len(chunk)
                    length -= len(chunk)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise Closed from exc
        seen.body_complete = True
        return b"".join(chunks)

    async def write(self, data: bytes) -> None:
        if self.closed:
            raise Closed
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise Closed from exc

    async def close(self, *, abort: bool = False) -> None:
        """Close; ``abort`` resets the connection instead of a clean FIN."""
        self.closed = True
        if abort:
            self.writer.transport.abort()
            return
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


#: A case: answers one request whose head was read (the body is the case's to read).
Handler = Callable[["Zoo", Conn, Head, Seen], Awaitable[None]]


@dataclass(slots=True, kw_only=True)
class Zoo:
    """The running server: its address, the case, and the log of what reached it."""

    handler: Handler
    image: bytes
    port: int = 0
    #: Free for a case's own counters (first answer fails, second succeeds…).
    state: dict[str, Any] = field(default_factory=dict)
    _seen: list[Seen] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _connections: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def seen(self) -> list[Seen]:
        """API requests (paths under ``/v1/``) in arrival order."""
        with self._lock:
            return [s for s in self._seen if s.api]

    def downloads(self) -> list[Seen]:
        """Requests for anything else (URL results), in arrival order."""
        with self._lock:
            return [s for s in self._seen if not s.api]

    def by_number(self, number: int) -> Seen:
        with self._lock:
            return next(s for s in self._seen if s.number == number)

    def _log(self, conn: Conn, head: Head) -> Seen:
        seen = Seen(
            number=next(self._numbers),
            connection=conn.number,
            method=head.method,
            path=head.path,
            client_request_id=head.get("x-client-request-id"),
            at=time.monotonic(),
            head=head,
        )
        with self._lock:
            self._seen.append(seen)
        return seen

    def image_b64(self) -> str:
        return base64.b64encode(self.image).decode()

    def image_json(self, seen: Seen, *, b64: str | None = None, url: str | None = None) -> bytes:
        """An ImagesResponse for ``seen``, which is marked billed (and delivered if inline)."""
        item: dict[str, Any] = {"url": url} if url else {"b64_json": b64 or self.image_b64()}
        seen.billed = True
        seen.delivered = url is None
        body = {"created": 1764633600, "data": [item], "usage": USAGE}
        return json.dumps(body).encode()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Conn(reader, writer, number=next(self._connections))
        try:
            while not conn.closed:
                try:
                    head = await asyncio.wait_for(conn.head(), conn.idle_timeout)
                except TimeoutError:
                    break
                if head is None:
                    break
                seen = self._log(conn, head)
                if conn.close_on_next:
                    await conn.close()
                    break
                await self.handler(self, conn, head, seen)
                conn.served += 1
        except Closed:
            pass
        finally:
            if not conn.closed:
                await conn.close()


def wire(
    status: str,
    headers: Sequence[str],
    body: bytes = b"",
    *,
    eol: bytes = b"\r\n",
) -> bytes:
    """A response exactly as given: status line, header lines, a blank line, the body."""
    head = [f"HTTP/1.1 {status}" if not status.startswith("HTTP/") else status, *headers]
    return eol.join(line.encode("latin-1") for line in head) + eol + eol + body


async def answer(
    conn: Conn,
    seen: Seen,
    status: str,
    headers: Sequence[str],
    body: bytes = b"",
    *,
    eol: bytes = b"\r\n",
) -> None:
    """Write ``wire(...)`` after an ``x-request-id`` of ours, and log what was written."""
    seen.request_id = f"req_zoo_{seen.number:04d}"
    code = status.removeprefix("HTTP/1.1 ").removeprefix("HTTP/1.0 ").split(" ")[0]
    seen.status = int(code)
    await conn.write(wire(status, [f"x-request-id: {seen.request_id}", *headers], body, eol=eol))


@contextlib.contextmanager
def running_zoo(handler: Handler, image: bytes, *, startup_timeout: float = 5.0) -> Iterator[Zoo]:
    """Serve ``handler`` on a free loopback port from a background thread."""
    zoo = Zoo(handler=handler, image=image)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    tasks: set[asyncio.Task[None]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await zoo.serve(reader, writer)
        finally:
            tasks.discard(task)

    servers: list[asyncio.Server] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(
            asyncio.start_server(on_connect, "127.0.0.1", 0, limit=MAX_HEAD)
        )
        zoo.port = server.sockets[0].getsockname()[1]
        servers.append(server)
        loop.call_soon(ready.set)
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True, name="wire-zoo")
    thread.start()
    if not ready.wait(startup_timeout):
        raise RuntimeError("the wire zoo did not start")
    try:
        yield zoo
    finally:

        async def stop() -> None:
            servers[0].close()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), loop).result(startup_timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(startup_timeout)
        loop.close()
