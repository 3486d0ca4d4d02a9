"""The one HTTP transport under every call: aiohttp's connection pool behind httpx's types.

Requests and responses stay ``httpx`` objects (the shapes, the tests and ``httpx.MockTransport``
speak them); the wire is ``httpx_aiohttp.AiohttpTransport``, the transport the official
``openai`` SDK ships for high concurrency. Over httpx's own transport it reads an answer a
server sends before it has read the whole upload (an early 401 to a large edit stays a 401,
not a broken pipe), copes with a stray CRLF after a body, and costs less CPU per request.

The same transport carries proxied calls: ``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY`` (an
http one) and ``NO_PROXY`` are read from the environment once, and each origin's proxy is
worked out once (aiohttp's own ``trust_env`` would look both up in a worker thread on every
request, two thread hops per call). Private CAs come through the TLS context
(``httpx.create_ssl_context`` reads ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``).

aiohttp's exceptions never leave this module: :data:`AIOHTTP_EXC_MAP` turns each into the
httpx exception that says what happened, for :mod:`runner.http.classify` to judge. A POST is
never re-sent here, and a connection whose answer could not be parsed is closed, not reused.
"""

from __future__ import annotations

import contextlib
import ssl
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from contextvars import ContextVar
from types import SimpleNamespace

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

#: Longest status or header line accepted (aiohttp's default, 8190, is below what some CDNs
#: send in a ``Set-Cookie`` or ``Content-Security-Policy``).
MAX_LINE = 64 * 1024
#: Most header lines accepted (aiohttp's default, 128, is below what some CDNs send: one
#: ``Set-Cookie`` per cookie).
MAX_HEADERS = 1024


#: Request extension: a callable the transport calls once the request's head is handed to the
#: socket (before that, nothing of the request can have reached the server).
ON_WRITTEN = "imagerun.on_written"
_on_written: ContextVar[Callable[[], None] | None] = ContextVar("on_written", default=None)


async def _headers_sent(_: aiohttp.ClientSession, __: SimpleNamespace, ___: object) -> None:
    if (mark := _on_written.get()) is not None:
        mark()


class UnreadableResponse(httpx.RemoteProtocolError):
    """The server answered, but its status line or headers could not be parsed.

    The request was delivered whole (the server was answering it), so the provider may have
    done, and billed, the work: such an attempt is recorded, never re-sent by itself.
    """


#: aiohttp exception → the httpx exception raised in its place (the most specific class wins).
AIOHTTP_EXC_MAP: dict[type[BaseException], type[httpx.HTTPError]] = {
    aiohttp.ClientError: httpx.TransportError,
    aiohttp.InvalidURL: httpx.UnsupportedProtocol,
    aiohttp.ClientConnectionError: httpx.NetworkError,
    aiohttp.ClientOSError: httpx.NetworkError,
    # Before a connection existed: nothing was sent.
    aiohttp.ClientConnectorError: httpx.ConnectError,
    aiohttp.ClientProxyConnectionError: httpx.ProxyError,
    aiohttp.ConnectionTimeoutError: httpx.ConnectTimeout,
    # After the request was written (or while writing it).
    aiohttp.ServerDisconnectedError: httpx.RemoteProtocolError,
    aiohttp.ServerTimeoutError: httpx.ReadTimeout,
    aiohttp.SocketTimeoutError: httpx.ReadTimeout,
    aiohttp.ClientPayloadError: httpx.ReadError,
    aiohttp.ClientHttpProxyError: httpx.ProxyError,
    aiohttp.ClientResponseError: UnreadableResponse,
}


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    """Raise the mapped httpx exception for an aiohttp one (also behind httpx_aiohttp's)."""
    try:
        yield
    except httpx.HTTPError as exc:
        cause = exc.__cause__
        if not isinstance(cause, aiohttp.ClientError):
            raise
        raise _translate(cause) from cause
    except aiohttp.ClientError as exc:
        raise _translate(exc) from exc
    except ValueError as exc:  # aiohttp refuses a header it would not write (CR/LF in it)
        raise httpx.LocalProtocolError(str(exc)) from exc


def _translate(exc: aiohttp.ClientError) -> httpx.HTTPError:
    if isinstance(exc, aiohttp.ClientResponseError) and not exc.history:
        # Its status is aiohttp's parser's code (400), not the server's: only the reason says.
        return UnreadableResponse(f"malformed answer: {exc.message}")
    for cls in type(exc).__mro__:
        if (mapped := AIOHTTP_EXC_MAP.get(cls)) is not None:
            return mapped(str(exc) or type(exc).__name__)
    return httpx.TransportError(str(exc))


class _Body(httpx.AsyncByteStream):
    """A response body whose read errors come out mapped."""

    def __init__(self, stream: httpx.AsyncByteStream) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped():
            async for chunk in self._stream:
                yield chunk

    async def aclose(self) -> None:
        with _mapped():
            await self._stream.aclose()


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
        self._pools: dict[str | None, AiohttpTransport] = {}

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

    def _pool(self, proxy: str | None) -> AiohttpTransport:
        pool = self._pools.get(proxy)
        if pool is None:
            through = httpx.Proxy(proxy) if proxy else None
            pool = self._pools[proxy] = AiohttpTransport(client=self._session, proxy=through)
        return pool

    def _session(self) -> aiohttp.ClientSession:
        written = aiohttp.TraceConfig()
        written.on_request_headers_sent.append(_headers_sent)
        connector = aiohttp.TCPConnector(
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
            trace_configs=[written],
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        pool = self._pool(self.proxy_for(request.url))
        token = _on_written.set(request.extensions.get(ON_WRITTEN))
        try:
            with _mapped():
                response = await pool.handle_async_request(request)
        finally:
            _on_written.reset(token)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Body(response.stream)
        return response

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()
