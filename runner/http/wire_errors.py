"""aiohttp's exceptions as the httpx exceptions that say what happened, by one table.

The transport (:mod:`runner.http.transport`) raises only these, for :mod:`runner.http.classify`
to judge: whether the request was written, and what the provider may have done with it.
"""

from __future__ import annotations

import aiohttp
import httpx

from runner.errors import Translating


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


class _Mapped(Translating):
    """Raise the mapped httpx exception for an aiohttp one (three times a request)."""

    __slots__ = ()

    def translate(self, exc: BaseException) -> httpx.HTTPError | None:
        if isinstance(exc, aiohttp.ClientError):
            return _translate(exc)
        if isinstance(exc, ValueError):  # aiohttp refuses a header it would not write (CR/LF)
            return httpx.LocalProtocolError(str(exc))
        return None


def _translate(exc: aiohttp.ClientError) -> httpx.HTTPError:
    if isinstance(exc, aiohttp.ClientResponseError) and not exc.history:
        # Its status is aiohttp's parser's code (400), not the server's: only the reason says.
        return UnreadableResponse(f"malformed answer: {exc.message}")
    for cls in type(exc).__mro__:
        if (mapped := AIOHTTP_EXC_MAP.get(cls)) is not None:
            return mapped(str(exc) or type(exc).__name__)
    return httpx.TransportError(str(exc))


#: The one instance every request uses (it keeps no state).
mapped = _Mapped()
