"""A route's API endpoint: base URL, credentials, timeouts, and the wire its calls go out on.

Calls are handed straight to a transport. ``httpx.AsyncClient.send`` would add a cookie jar,
redirect and auth flows and URL merging on every call: a provider's API needs none of them,
and on a fast route they cost more CPU than the request itself. Where a proxy applies (or
``IMAGERUN_HTTP=httpx``), the wire is a full ``httpx.AsyncClient``, which honours the
``HTTP(S)_PROXY`` variables (see :func:`api_transport`).
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.request
from typing import Any

import httpx

from runner import __version__
from runner.http.http11 import Http11Transport
from runner.shapes.base import PreparedRequest

#: Response encodings httpx decodes.
ACCEPT_ENCODING = "gzip, deflate"


def api_transport(
    url: str | httpx.URL, ssl_context: ssl.SSLContext
) -> httpx.AsyncBaseTransport | None:
    """This transport for ``url``, or ``None`` where httpx's own should carry the calls.

    httpx honours ``HTTP(S)_PROXY`` only with its own transport, so a proxied origin keeps it;
    ``IMAGERUN_HTTP=httpx`` asks for httpx's transport everywhere.
    """
    if os.environ.get("IMAGERUN_HTTP", "").lower() == "httpx":
        return None
    url = httpx.URL(url)
    proxies = urllib.request.getproxies_environment()
    if (proxies.get(url.scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(
        url.host
    ):
        return None
    return Http11Transport(ssl_context=ssl_context)


class ApiClient:
    """Sends a route's API calls (see the module docstring)."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        timeout: httpx.Timeout,
        limits: httpx.Limits | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        tls = tls or httpx.create_ssl_context()
        limits = limits or httpx.Limits()
        self._base = base_url.rstrip("/")
        self._timeout = timeout.as_dict()
        self._headers = httpx.Headers(
            {
                "Authorization": f"Bearer {api_key}",
                "Accept": "application/json",
                "Accept-Encoding": ACCEPT_ENCODING,
                "User-Agent": f"imagerun/{__version__}",
            }
        )
        self._json_headers = httpx.Headers({**self._headers, "Content-Type": "application/json"})
        self._urls: dict[str, httpx.URL] = {}
        wire = api_transport(base_url, tls)
        #: Set when the calls go through httpx's client (proxies), else ``None``.
        self._client = (
            httpx.AsyncClient(timeout=timeout, limits=limits, verify=tls) if wire is None else None
        )
        self._wire = wire

    def request(self, prepared: PreparedRequest, client_request_id: str) -> httpx.Request:
        """The POST for ``prepared``, with our request id (``X-Client-Request-Id``)."""
        url = self._urls.get(prepared.endpoint)
        if url is None:
            url = self._urls[prepared.endpoint] = httpx.URL(self._base + prepared.endpoint)
        extensions = {"timeout": self._timeout}
        if prepared.json is not None:
            # Encoded here, compactly: httpx's own encoder is slower and pads separators.
            body = json.dumps(prepared.json, separators=(",", ":"), ensure_ascii=False)
            headers = httpx.Headers(self._json_headers)
            headers["X-Client-Request-Id"] = client_request_id
            return httpx.Request(
                "POST", url, content=body.encode(), headers=headers, extensions=extensions
            )
        headers = httpx.Headers(self._headers)
        headers["X-Client-Request-Id"] = client_request_id
        return httpx.Request(
            "POST",
            url,
            data=prepared.data,
            files=prepared.files,
            headers=headers,
            extensions=extensions,
        )

    async def send(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``; the response's body is streamed (read it, then ``aclose()``)."""
        if self._client is not None:
            return await self._client.send(request, stream=True)
        assert self._wire is not None
        response = await self._wire.handle_async_request(request)
        response.request = request
        return response

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        if self._wire is not None:
            await self._wire.aclose()

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()
