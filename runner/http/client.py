"""A route's API endpoint: base URL, credentials, timeouts, and the wire its calls go out on.

Calls are handed straight to the transport (:class:`runner.http.transport.Transport`, the same
one for proxied and direct routes). ``httpx.AsyncClient.send`` would add a cookie jar,
redirect and auth flows and URL merging on every call: a provider's API needs none of them
(:func:`runner.http.send.send` follows the redirects a POST may follow).

An attempt's JSON POST is built as the wire writes it (:meth:`ApiClient.outgoing`), its header
lines in the order and form ``httpx.Request`` gives them, without building one.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from typing import Any

import httpx
from yarl import URL

from runner import __version__
from runner.http.transport import Answer, Outgoing, Transport
from runner.shapes.base import PreparedRequest

#: Response encodings httpx decodes.
ACCEPT_ENCODING = "gzip, deflate"


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
        #: Seconds one attempt may take from connecting to the last byte of its answer.
        self.deadline_s = timeout.read
        self._wire = Transport(tls, limits)
        self._wire_timeout = self._wire.timeout(self._timeout)
        #: endpoint -> its URL (httpx's, its text, aiohttp's) and the header lines before ours.
        self._posts: dict[str, tuple[httpx.URL, str, URL, list[tuple[str, str]]]] = {}

    def outgoing(self, prepared: PreparedRequest, client_request_id: str) -> Outgoing:
        """What :meth:`request` builds for ``prepared``, as the wire sends it."""
        if prepared.json is None:  # a multipart upload: httpx encodes the body
            return self._wire.outgoing(self.request(prepared, client_request_id))
        post = self._posts.get(prepared.endpoint)
        if post is None:
            url = self._url(prepared.endpoint)
            head = [("host", url.netloc.decode("ascii")), *self._json_headers.multi_items()]
            post = (url, str(url), self._wire.wire_url(url), head)
            self._posts[prepared.endpoint] = post
        url, text, wire_url, head = post
        body = json.dumps(prepared.json, separators=(",", ":"), ensure_ascii=False).encode()
        return Outgoing(
            method="POST",
            url=url,
            wire_url=wire_url,
            url_text=text,
            headers=[
                *head,
                ("x-client-request-id", client_request_id),
                ("content-length", str(len(body))),
            ],
            body=body,
            timeout=self._wire_timeout,
        )

    async def open(self, out: Outgoing, on_written: Callable[[], None] | None = None) -> Answer:
        """Send ``out``; the answer's body is streamed (read it, then ``aclose()``).

        ``on_written`` is called once the request has its connection.
        """
        return Answer(await self._wire.open(out, on_written))

    def _url(self, endpoint: str) -> httpx.URL:
        url = self._urls.get(endpoint)
        if url is None:
            url = self._urls[endpoint] = httpx.URL(self._base + endpoint)
        return url

    def request(self, prepared: PreparedRequest, client_request_id: str) -> httpx.Request:
        """The POST for ``prepared``, with our request id (``X-Client-Request-Id``)."""
        url = self._url(prepared.endpoint)
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

    def call(
        self,
        method: str,
        endpoint: str,
        *,
        params: dict[str, str | int] | None = None,
        json_body: dict[str, Any] | None = None,
        data: dict[str, str] | None = None,
        files: dict[str, tuple[str, Any, str]] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Request:
        """Any other call to the provider's API (``method`` on ``endpoint``), with the key.

        ``files`` may hold open binary files: the multipart body is then streamed from them.
        """
        url = httpx.URL(self._base + endpoint, params=params)
        extensions = {"timeout": timeout.as_dict() if timeout else self._timeout}
        if json_body is not None:
            body = json.dumps(json_body, separators=(",", ":"), ensure_ascii=False)
            return httpx.Request(
                method,
                url,
                content=body.encode(),
                headers=self._json_headers,
                extensions=extensions,
            )
        return httpx.Request(
            method, url, data=data, files=files, headers=self._headers, extensions=extensions
        )

    async def send(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``; the response's body is streamed (read it, then ``aclose()``)."""
        response = await self._wire.handle_async_request(request)
        response.request = request
        return response

    async def aclose(self) -> None:
        await self._wire.aclose()

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()
