"""The one HTTP transport under every call: aiohttp's connection pool and its llhttp parser.

The wire is an ``aiohttp.ClientSession``, the client the official ``openai`` SDK ships for
high concurrency. Over httpx's own transport it reads an answer a server sends before it has
read the whole upload (an early 401 to a large edit stays a 401, not a broken pipe), copes
with a stray CRLF after a body, and costs less CPU per request.

A request goes out as an :class:`Outgoing` (method, URL, header lines, body, as they are) and
its answer comes back as an :class:`Answer` (status, headers, the body streamed), with no more
conversion than that: an attempt builds no ``httpx`` request or response. The transport is
also an ``httpx.AsyncBaseTransport`` (``handle_async_request``) for every other call, the
tests and ``httpx.AsyncClient``: the same wire under httpx's types.

The same transport carries proxied calls: ``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY`` (an
http one) and ``NO_PROXY`` are read from the environment once, and each origin's proxy is
worked out once (aiohttp's own ``trust_env`` would look both up in a worker thread on every
request, two thread hops per call). Private CAs come through the TLS context
(``httpx.create_ssl_context`` reads ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``).

aiohttp's exceptions never leave this module: :mod:`runner.http.wire_errors` turns each into
the httpx exception that says what happened, for :mod:`runner.http.classify` to judge. A POST is
never re-sent here, and a connection whose answer could not be parsed is closed, not reused.
"""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.tracing import Trace
from yarl import URL

from runner.http.wire_errors import mapped

#: Longest status or header line accepted (aiohttp's default, 8190, is below what some CDNs
#: send in a ``Set-Cookie`` or ``Content-Security-Policy``).
MAX_LINE = 64 * 1024
#: Most header lines accepted (aiohttp's default, 128, is below what some CDNs send: one
#: ``Set-Cookie`` per cookie).
MAX_HEADERS = 1024
#: Most distinct URLs whose parsed form is kept (a run posts to a handful of endpoints).
URLS_KEPT = 256
#: Connections with unread bytes closed before a request gives up (an unlimited pool).
STALE_TRIES = 100


#: Request extension: a callable the transport calls once the request has a connection (its
#: head is written to it next; before that, nothing of the request can have reached the
#: server, and a request cut off while connecting or queueing for a connection was not sent).
ON_WRITTEN = "imagerun.on_written"
_on_written: ContextVar[Callable[[], None] | None] = ContextVar("on_written", default=None)


class _Connector(aiohttp.TCPConnector):
    """aiohttp's pool, saying when a request gets its connection (see :data:`ON_WRITTEN`),
    and never handing out a kept-alive connection that holds bytes nobody asked for.

    A server may write more after an answer that was read whole: a second, unsolicited
    answer, or garbage. aiohttp's pool checks a connection for that when it takes it back,
    not when it lends it out again, so bytes that arrive while it sits idle would be read as
    the next request's answer, and that request's own (billed) answer thrown away. Such a
    connection is closed here before anything is written to it, and another one taken.

    A request trace would say when the head was written, a few statements later, but a
    session with any trace builds one per request and awaits a hook at every step.
    """

    async def connect(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 (aiohttp's signature)
    ) -> Connection:
        connection = await super().connect(req, traces, timeout)
        closed = 0
        while (protocol := connection.protocol) is not None and protocol.should_close:
            connection.close()
            # The pool holds at most ``limit`` connections; past that, fresh ones hold bytes
            # too (a server that speaks first), and the request is given up, not sent.
            closed += 1
            if closed > (self.limit or STALE_TRIES):
                raise aiohttp.ClientConnectionError("the server wrote before it was asked")
            connection = await super().connect(req, traces, timeout)
        if (mark := _on_written.get()) is not None:
            mark()
        return connection


class _Body(httpx.AsyncByteStream):
    """An aiohttp response's body as httpx streams it, read errors mapped.

    Chunks come as the socket delivered them (a 3 MB image in a few dozen, not in 16 KiB
    pieces). Closing releases the connection to the pool if the body was read whole, and
    closes it otherwise.
    """

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with mapped:
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        with mapped:
            await self._response.__aexit__(None, None, None)


def as_httpx(response: aiohttp.ClientResponse, request: httpx.Request) -> httpx.Response:
    """An aiohttp answer as an ``httpx.Response`` to ``request``, its body streamed."""
    extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
    if response.reason:
        extensions["reason_phrase"] = response.reason.encode()
    return httpx.Response(
        status_code=response.status,
        headers=response.raw_headers,
        stream=_Body(response),
        request=request,
        extensions=extensions,
    )


class Answer:
    """An answer whose status line and headers are in, its body streamed (no httpx objects).

    ``headers`` reads as ``httpx.Headers`` does: names in lower case, a repeated header's
    values joined by ``", "``, decoded as ASCII, else UTF-8, else ISO-8859-1.
    """

    __slots__ = ("_decoded", "_raw", "body", "headers", "status_code")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        #: The body's bytes as the socket delivers them, not decoded; ``aclose()`` it.
        self.body = _Body(response)
        self._raw = response.raw_headers
        self._decoded: httpx.Response | None = None
        self.status_code = response.status
        self.headers = header_map(response.raw_headers)

    def decoded(self) -> httpx.Response:
        """The same answer as an ``httpx.Response`` (which decodes its content encoding)."""
        if self._decoded is None:
            self._decoded = httpx.Response(self.status_code, headers=self._raw, stream=self.body)
        return self._decoded

    async def aclose(self) -> None:
        """Release the connection to the pool if the body was read whole, else close it."""
        await (self._decoded or self.body).aclose()


def header_map(raw: tuple[tuple[bytes, bytes], ...]) -> dict[str, str]:
    """Header lines as ``httpx.Headers`` reads them (see :class:`Answer`)."""
    for encoding in ("ascii", "utf-8", "iso-8859-1"):
        found: dict[str, str] = {}
        try:
            for key, value in raw:
                name, text = key.lower().decode(encoding), value.decode(encoding)
                found[name] = f"{found[name]}, {text}" if name in found else text
        except UnicodeDecodeError:
            continue
        return found
    raise AssertionError("unreachable: ISO-8859-1 decodes every byte")


@dataclass(frozen=True, slots=True, kw_only=True)
class Outgoing:
    """One request as the wire sends it (built once per call, no httpx objects needed)."""

    method: str
    #: Where it goes, as httpx parsed it (redirects are joined on it, proxies chosen by it).
    url: httpx.URL
    #: The same URL as aiohttp takes it (``None``: parsed when sent).
    wire_url: URL | None
    #: The URL's text (what :attr:`runner.http.send.Exchange.url` records).
    url_text: str
    #: Every header line, in order, as written (``Host`` and ``Content-Length`` included).
    #: Left out of the repr: ``Authorization`` carries the key (``httpx.Headers`` masks it).
    headers: list[tuple[str, str]] = field(repr=False)
    #: The body: bytes, an httpx stream (a multipart upload: aiohttp frames it), or none.
    body: bytes | httpx.AsyncByteStream | None
    timeout: aiohttp.ClientTimeout


@dataclass(frozen=True, slots=True)
class _Pool:
    """One connection pool: direct, or through one proxy."""

    session: aiohttp.ClientSession
    proxy: URL | None = None
    proxy_auth: aiohttp.BasicAuth | None = None


class Transport(httpx.AsyncBaseTransport):
    """Every call's wire (see the module docstring).

    Args:
        tls: the TLS context for ``https`` origins (one per run: each costs 20-40 ms).
        limits: ``max_connections`` caps each pool (``None``: no cap) and ``keepalive_expiry``
            how long an idle connection is kept; aiohttp keeps every idle connection within
            that cap, so ``max_keepalive_connections`` is bounded by ``max_connections``.
            There is one pool for direct calls and one per proxy in use.
    """

    def __init__(self, tls: ssl.SSLContext, limits: httpx.Limits | None = None) -> None:
        self._limits = limits or httpx.Limits()
        self._tls = tls
        self._proxies = urllib.request.getproxies_environment()
        #: (scheme, host) -> the proxy URL its calls go through, or None for direct.
        self._routes: dict[tuple[str, str], str | None] = {}
        self._pools: dict[str | None, _Pool] = {}
        #: A request URL's text -> its parsed form (aiohttp would parse it on every call).
        self._urls: dict[str, URL] = {}
        #: httpx's timeout extension (connect, read, pool) -> aiohttp's, built once.
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}

    def proxy_for(self, url: httpx.URL) -> str | None:
        """The proxy a call to ``url`` goes through (``None``: direct), by the environment."""
        key = (url.scheme, url.host)
        if key not in self._routes:
            proxy = self._proxies.get(url.scheme) or self._proxies.get("all")
            if proxy and not proxy.startswith(("http://", "https://")):
                proxy = None  # a SOCKS proxy: aiohttp speaks only HTTP proxies
            if proxy and urllib.request.proxy_bypass(url.host):
                proxy = None
            self._routes[key] = proxy
        return self._routes[key]

    def _pool(self, proxy: str | None) -> _Pool:
        pool = self._pools.get(proxy)
        if pool is None:
            pool = self._pools[proxy] = _Pool(self._session(), *_proxy_parts(proxy))
        return pool

    def _session(self) -> aiohttp.ClientSession:
        connector = _Connector(
            limit=self._limits.max_connections or 0,
            keepalive_timeout=self._limits.keepalive_expiry,
            ssl=self._tls,
        )
        return aiohttp.ClientSession(
            connector=connector,
            max_line_size=MAX_LINE,
            max_field_size=MAX_LINE,
            max_headers=MAX_HEADERS,
            # Cookies from one provider answer must not ride on the next request.
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    def wire_url(self, url: httpx.URL) -> URL:
        """``url`` parsed as aiohttp takes it (kept: aiohttp would parse it on every call)."""
        text = str(url)
        parsed = self._urls.get(text)
        if parsed is None:
            if len(self._urls) >= URLS_KEPT:
                self._urls.clear()
            parsed = self._urls[text] = URL(text, encoded=True)  # httpx has encoded it
        return parsed

    def timeout(self, given: dict[str, float | None]) -> aiohttp.ClientTimeout:
        """aiohttp's timeout for httpx's timeout extension (connect, read, pool), built once."""
        key = (given.get("connect"), given.get("read"), given.get("pool"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            # httpx's pool timeout bounds the wait for a connection, which aiohttp's
            # ``connect`` covers; ``read`` is a silence between two reads, as in httpx.
            timeout = aiohttp.ClientTimeout(sock_connect=key[0], sock_read=key[1], connect=key[2])
            self._timeouts[key] = timeout
        return timeout

    def outgoing(self, request: httpx.Request) -> Outgoing:
        """``request`` as the wire sends it: its method, URL, headers and body as they are."""
        content, headers = _body(request)
        return Outgoing(
            method=request.method,
            url=request.url,
            wire_url=None,
            url_text=str(request.url),
            headers=headers,
            body=content,
            timeout=self.timeout(request.extensions.get("timeout", {})),
        )

    async def open(
        self, out: Outgoing, on_written: Callable[[], None] | None = None
    ) -> aiohttp.ClientResponse:
        """Send ``out``; its answer's status line and headers are in, its body is not read.

        ``on_written`` is called once the request has its connection (see :data:`ON_WRITTEN`).
        """
        pool = self._pool(self.proxy_for(out.url))
        token = _on_written.set(on_written)
        try:
            with mapped:
                return await pool.session.request(
                    out.method,
                    out.wire_url or self.wire_url(out.url),
                    headers=out.headers,
                    data=out.body,
                    allow_redirects=False,
                    auto_decompress=False,  # httpx decodes (and says which encodings it takes)
                    timeout=out.timeout,
                    proxy=pool.proxy,
                    proxy_auth=pool.proxy_auth,
                )
        finally:
            _on_written.reset(token)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.open(self.outgoing(request), request.extensions.get(ON_WRITTEN))
        return as_httpx(response, request)

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.session.close()


def _proxy_parts(proxy: str | None) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """A proxy URL without its credentials, and the credentials for its Proxy-Authorization."""
    if proxy is None:
        return None, None
    parsed = httpx.Proxy(proxy)
    auth = aiohttp.BasicAuth(*parsed.auth) if parsed.auth else None
    return URL(str(parsed.url)), auth


def _body(
    request: httpx.Request,
) -> tuple[bytes | httpx.AsyncByteStream | None, list[tuple[str, str]]]:
    """What aiohttp sends: the body (the bytes httpx has, else its stream) and the headers."""
    try:
        return request.content or None, request.headers.multi_items()
    except httpx.RequestNotRead:  # a streamed body (a multipart upload): aiohttp frames it
        assert isinstance(request.stream, httpx.AsyncByteStream)
        headers = [(k, v) for k, v in request.headers.multi_items() if k != "transfer-encoding"]
        return request.stream, headers
