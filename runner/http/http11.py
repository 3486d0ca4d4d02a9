"""A lean HTTP/1.1 keep-alive transport for httpx: the wire under every attempt.

httpx's default transport (httpcore and h11 over anyio streams) spends about a millisecond of
CPU per request on a small machine: more than everything else imagerun does for a job, and
the reason a run could not keep up with a fast gateway. This transport keeps httpx's client
(request building, headers, timeouts, exception types, decoding) and replaces only the wire:
one asyncio protocol per connection, llhttp (``httptools``) to parse responses, one write per
request with a buffered body.

What it is not: a retrying client. A connection that dies after a request was written raises
(``RemoteProtocolError`` or ``ReadError``) and is never silently re-sent: whether the provider
saw, and billed, that request is the caller's question (design.md §6). Only a connection found
dead *before* a byte of the request was written is replaced. Proxies are httpx's job
(see :func:`runner.http.client.api_transport`).
"""

from __future__ import annotations

import asyncio
import select
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator

import httptools
import httpx

#: Body bytes buffered per connection before the socket stops being read (backpressure: the
#: run's memory budget only works if unread bodies stay in the kernel, not in Python).
HIGH_WATER = 512 * 1024
#: Idle connections older than this are closed instead of reused (servers drop idle
#: keep-alive connections; uvicorn's default is 5 s, so reuse stops just short of it).
KEEPALIVE_EXPIRY_S = 4.0
#: Idle connections kept per origin.
MAX_IDLE = 256

Origin = tuple[str, str, int]


class Http11Transport(httpx.AsyncBaseTransport):
    """A pool of keep-alive HTTP/1.1 connections, per origin (``http`` and ``https``)."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl = ssl_context
        self._idle: dict[Origin, deque[_Connection]] = {}
        #: Connections opened so far (tests and diagnostics: reuse shows as a low count).
        self.opened = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {request.url.scheme!r}")
        timeouts = request.extensions.get("timeout", {})
        origin = (request.url.scheme, request.url.host, request.url.port or _port(request.url))
        head = _head(request)
        try:
            body: bytes | None = request.content
        except httpx.RequestNotRead:
            body = None  # a streamed body (multipart uploads): written chunk by chunk
        conn = self._checkout(origin) or await self._connect(origin, timeouts.get("connect"))
        try:
            return await conn.exchange(request, head, body, timeouts, self)
        except BaseException:
            conn.close()
            raise

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()

    def _checkout(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.reusable(now):
                return conn
            conn.close()
        return None

    def _checkin(self, conn: _Connection) -> None:
        idle = self._idle.setdefault(conn.origin, deque())
        if len(idle) >= MAX_IDLE:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    async def _connect(self, origin: Origin, within: float | None) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = None
        if scheme == "https":
            tls = self._ssl or ssl.create_default_context()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(origin, loop),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls else None,
                ),
                within,
            )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"no connection to {host}:{port} in {within}s") from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"{host}:{port}: {exc}") from exc
        self.opened += 1
        return conn


class _Connection(asyncio.Protocol):
    """One socket; carries one exchange at a time."""

    def __init__(self, origin: Origin, loop: asyncio.AbstractEventLoop) -> None:
        self.origin = origin
        self.idle_since = 0.0
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._fileno = -1
        self._parser = httptools.HttpResponseParser(self)
        self._closed = False
        self._busy = False
        self._waiter: asyncio.Future[bool] | None = None
        self._writable = True
        self._new_message()

    def _new_message(self) -> None:
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._headers_done = False
        self._done = False
        self._keep_alive = False
        self._until_close = False
        self._started = False
        self._body: deque[bytes] = deque()
        self._buffered = 0
        self._reading_paused = False
        self._error: httpx.TransportError | None = None
        self._head_only = False

    # -- the exchange (called by the transport and the body stream) -----------------------

    async def exchange(
        self,
        request: httpx.Request,
        head: bytes,
        body: bytes | None,
        timeouts: dict[str, float | None],
        pool: Http11Transport,
    ) -> httpx.Response:
        transport = self._transport
        assert transport is not None
        self._busy = True
        self._new_message()
        self._head_only = request.method == "HEAD"
        if body is not None:
            transport.write(head + body)
        else:
            transport.write(head)
            await self._write_stream(request, timeouts.get("write"))
        read_timeout = timeouts.get("read")
        while not self._headers_done:
            await self._wait(read_timeout)
        headers = self._headers
        return httpx.Response(
            self._parser.get_status_code(),
            headers=headers,
            stream=_Body(self, pool, read_timeout),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": self._reason},
        )

    async def _write_stream(self, request: httpx.Request, within: float | None) -> None:
        transport = self._transport
        assert transport is not None
        chunked = request.headers.get("transfer-encoding", "").lower() == "chunked"
        assert isinstance(request.stream, httpx.AsyncByteStream)
        async for chunk in request.stream:
            if self._error is not None:
                raise self._error
            if chunked:
                chunk = b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunk else b""
            transport.write(chunk)
            while not self._writable and self._error is None:
                if not await self._park(within):
                    raise httpx.WriteTimeout(f"request body not sent in {within}s")
        if chunked:
            transport.write(b"0\r\n\r\n")

    async def _wait(self, within: float | None) -> None:
        """Until the parser has news for the reader (raises on error, or after ``within`` s)."""
        if self._error is not None:
            raise self._error
        if not await self._park(within):
            raise httpx.ReadTimeout(f"no data from {self.origin[1]} in {within}s")
        if self._error is not None:
            raise self._error

    async def _park(self, within: float | None) -> bool:
        """Until woken (True) or ``within`` seconds have passed (False)."""
        waiter = self._loop.create_future()
        self._waiter = waiter
        timer = None if within is None else self._loop.call_later(within, _expire, waiter)
        try:
            return bool(await waiter)
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def take_body(self) -> bytes:
        """Everything buffered so far (and the socket is read again if it was paused)."""
        data = self._body.popleft() if len(self._body) == 1 else b"".join(self._body)
        self._body.clear()
        self._buffered = 0
        if self._reading_paused and self._transport is not None and not self._closed:
            self._reading_paused = False
            self._transport.resume_reading()
        return data

    def finish(self, pool: Http11Transport) -> None:
        """The body stream is closed: back to the pool if the exchange ended cleanly."""
        self._busy = False
        if self._done and self._keep_alive and not self._closed and not self._body:
            pool._checkin(self)
        else:
            self.close()

    def reusable(self, now: float) -> bool:
        if self._closed or now - self.idle_since > KEEPALIVE_EXPIRY_S:
            return False
        # Readable while idle means the server closed (or broke protocol) and the loop has
        # not noticed yet: sending on it would lose the request to a race, so it is dropped.
        poller = select.poll()  # not select(): it cannot watch descriptors above 1023
        poller.register(self._fileno, select.POLLIN)
        return not poller.poll(0)

    def close(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.close()

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        self._fileno = sock.fileno() if sock is not None else -1

    def data_received(self, data: bytes) -> None:
        if not self._busy or self._done:
            self._fail(httpx.RemoteProtocolError("the server sent data after its response"))
            self.close()
            return
        self._started = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if not self._done:  # else the answer is whole: only the connection is spoilt
                self._fail(httpx.RemoteProtocolError(f"malformed HTTP response: {exc}"))
            self.close()
        self._wake(True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._busy and not self._done:
            if self._headers_done and self._until_close and exc is None:
                self._done = True  # a body delimited by the end of the connection
            elif not self._started:
                self._fail(
                    httpx.RemoteProtocolError("Server disconnected without sending a response.")
                )
            else:
                reason = f": {exc}" if exc else ""
                self._fail(httpx.ReadError(f"connection closed mid-response{reason}"))
        self._writable = True
        self._wake(True)

    def pause_writing(self) -> None:
        self._writable = False

    def resume_writing(self) -> None:
        self._writable = True
        self._wake(True)

    # -- httptools callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._done:
            # A second message in the same read: the answer is whole, the rest is not ours
            # to parse (it would be merged into it). Stop here; the connection is dropped.
            self._keep_alive = False
            raise ValueError("a second response in one exchange")

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return  # an interim response (103 Early Hints…): the real one follows
        self._headers_done = True
        names = {name.lower() for name, _ in self._headers}
        self._until_close = b"content-length" not in names and b"transfer-encoding" not in names
        if self._head_only:
            # The answer to HEAD has no body whatever its headers say, and llhttp cannot be
            # told so: the exchange ends here, and the connection is not reused.
            self._done = True
            self._keep_alive = False

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._reading_paused and self._transport:
            self._reading_paused = True
            self._transport.pause_reading()

    def on_message_complete(self) -> None:
        if not self._headers_done:  # the end of an interim response
            self._reason = b""
            self._headers = []
            return
        if not self._head_only:
            self._done = True
            self._keep_alive = self._parser.should_keep_alive()

    def _fail(self, error: httpx.TransportError) -> None:
        if self._error is None:
            self._error = error

    def _wake(self, value: bool) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(value)


class _Body(httpx.AsyncByteStream):
    """A response body as it arrives; closing it hands the connection back."""

    def __init__(self, conn: _Connection, pool: Http11Transport, timeout: float | None) -> None:
        self._conn = conn
        self._pool = pool
        self._timeout = timeout
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            if conn._body:
                yield conn.take_body()
            elif conn._done:
                return
            else:
                await conn._wait(self._timeout)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._conn.finish(self._pool)


def _head(request: httpx.Request) -> bytes:
    """Request line and headers, as sent (httpx has already added Host and the body length)."""
    url = request.url
    lines = [b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), url.raw_path)]
    for name, value in request.headers.raw:
        if b"\r" in value or b"\n" in value or b"\r" in name or b"\n" in name:
            raise httpx.LocalProtocolError(f"header {name.decode(errors='replace')!r}: line break")
        lines.append(b"%s: %s\r\n" % (name, value))
    lines.append(b"\r\n")
    return b"".join(lines)


def _port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)
