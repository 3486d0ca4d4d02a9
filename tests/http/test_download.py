"""URL downloads (``runner.http.download``): limits, redirects, failures, the attempt's deadline."""

from __future__ import annotations

import asyncio
import ssl
import time

import anyio
import httpx
import pytest

from runner.errors import AttemptError
from runner.http.download import download, fetch_client
from runner.http.transport import Transport
from runner.models import Outcome

from .loopback import Peer, Received, replying, response, serve

pytestmark = pytest.mark.anyio

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


def client() -> httpx.AsyncClient:
    return fetch_client(ssl.create_default_context(), None, httpx.Timeout(5.0))


async def test_the_fetch_client_is_on_the_one_transport() -> None:
    async with client() as fetch:
        assert isinstance(fetch._transport, Transport)


async def test_a_url_result_is_downloaded_through_redirects() -> None:
    def reply(request: Received) -> bytes:
        if request.target == "/files/a.png":
            return response(b"", status=302, reason="Found", headers=[("Location", "/cdn/a.png")])
        return response(PNG, headers=[("Content-Type", "image/png")])

    async with serve(replying(reply)) as server, client() as fetch:
        data = await download(fetch, f"{server.url}/files/a.png", limit=1024)
    assert data == PNG
    assert [r.target for r in server.requests] == ["/files/a.png", "/cdn/a.png"]
    assert all("authorization" not in r.headers for r in server.requests)


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (response(b"expired", status=403, reason="Forbidden"), "403"),
        (response(PNG * 100), "larger than"),
    ],
    ids=["403", "too-large"],
)
async def test_a_failed_download_is_download_failed(reply: bytes, why: str) -> None:
    async with serve(replying(lambda _: reply)) as server, client() as fetch:
        with pytest.raises(AttemptError) as failed:
            await download(fetch, f"{server.url}/f.png", limit=1024)
    assert failed.value.outcome is Outcome.DOWNLOAD_FAILED
    assert why in failed.value.message


async def test_only_http_urls_are_fetched() -> None:
    async with client() as fetch:
        with pytest.raises(AttemptError, match="only http"):
            await download(fetch, "file:///etc/passwd", limit=1024)


async def test_the_download_ends_at_the_attempts_deadline() -> None:
    """A result trickling in is cut when what is left of the attempt's timeout runs out."""

    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        for _ in range(1000):
            await peer.send(b"x" * 100)
            await asyncio.sleep(0.05)

    async with serve(handler) as server, client() as fetch:
        started = time.monotonic()
        with pytest.raises(AttemptError, match="timed out") as failed:
            await download(
                fetch, f"{server.url}/slow.png", limit=10**6, deadline=anyio.current_time() + 0.5
            )
        waited = time.monotonic() - started
    assert failed.value.outcome is Outcome.DOWNLOAD_FAILED
    assert 0.4 <= waited < 2.0
