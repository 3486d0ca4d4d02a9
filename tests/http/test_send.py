"""One attempt through ``runner.http.send`` against loopback servers writing exact bytes.

Each test pins one rule of how an answer is classified and recorded: what the caller gets
(outcome, status, ids, whether the request left, whether the route stops) and what the server
saw (how many requests, on how many connections: a request is never re-sent by the wire).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
import httpx
import pytest

from runner.errors import AttemptError
from runner.http.classify import REDIRECT
from runner.http.client import ApiClient
from runner.http.send import send
from runner.models import Outcome
from runner.shapes.base import PreparedRequest

from .loopback import (
    Handler,
    Peer,
    Received,
    certificate,
    replying,
    response,
    serve,
    server_tls,
)

pytestmark = pytest.mark.anyio

IMAGE_BODY = b'{"created":1,"data":[{"b64_json":"aGVsbG8="}]}'
GENERATE = PreparedRequest(endpoint="/images/generations", json={"prompt": "a lighthouse"})


def api(base: str, timeout: float = 5.0, tls: ssl.SSLContext | None = None) -> ApiClient:
    return ApiClient(base, api_key="sk-test", timeout=httpx.Timeout(timeout), tls=tls)


def json_reply(
    body: bytes,
    *,
    status: int = 200,
    reason: str = "OK",
    headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    return response(
        body,
        status=status,
        reason=reason,
        headers=[("Content-Type", "application/json"), *headers],
    )


async def attempt(base: str, prepared: PreparedRequest = GENERATE, **kw: float) -> AttemptError:
    """Send once; the attempt must fail: its error."""
    async with api(base, **kw) as client:
        with pytest.raises(AttemptError) as failed:
            await send(client, prepared, "ir-1")
    return failed.value


# -- rule 3: a 200 whose body is an error object -------------------------------------------


def gateway_error(code: str, message: str, type_: str = "new_api_error") -> bytes:
    error = {"error": {"code": code, "message": message, "type": type_}}
    return json.dumps(error).encode()


@pytest.mark.parametrize(
    ("code", "type_", "outcome", "stops"),
    [
        ("insufficient_user_quota", "new_api_error", Outcome.QUOTA_EXHAUSTED, True),
        ("invalid_api_key", "invalid_request_error", Outcome.AUTH, True),
        ("", "authentication_error", Outcome.AUTH, True),
        ("moderation_blocked", "image_generation_user_error", Outcome.MODERATION_BLOCKED, False),
    ],
)
async def test_a_200_carrying_an_error_object_is_that_error(
    code: str, type_: str, outcome: Outcome, stops: bool
) -> None:
    message = "user quota is not enough (request id: 2026120203000012345abcdef)"
    reply = json_reply(gateway_error(code, message, type_), headers=[("X-Request-Id", "up-1")])
    async with serve(replying(lambda _: reply)) as server:
        error = await attempt(server.url)
    assert error.outcome is outcome
    assert error.status == 200
    assert error.sent
    assert error.stops_route is stops
    assert not error.outcome.retryable  # quota and auth stop; moderation is never retried
    assert error.gateway_request_id == "2026120203000012345abcdef"
    assert error.provider_request_id == "up-1"
    assert len(server.requests) == 1


async def test_a_200_with_data_and_an_empty_error_field_is_a_success() -> None:
    body = b'{"data":[{"b64_json":"aGVsbG8="}],"error":null}'
    async with serve(replying(lambda _: json_reply(body))) as server, api(server.url) as client:
        exchange = await send(client, GENERATE, "ir-1")
    assert exchange.body["data"][0]["b64_json"] == "aGVsbG8="


# -- rule 4: a gateway's timeout means the origin may have done the work --------------------


@pytest.mark.parametrize(
    ("status", "reason"),
    [(502, "Bad Gateway"), (504, "Gateway Timeout"), (524, "A Timeout Occurred")],
)
async def test_a_gateway_timeout_is_a_timeout_of_a_sent_request(status: int, reason: str) -> None:
    html = f"<html><body>{status} {reason}</body></html>".encode()
    reply = response(html, status=status, reason=reason, headers=[("CF-Ray", "8f1e-LAX")])
    async with serve(replying(lambda _: reply)) as server:
        error = await attempt(server.url)
    assert (error.outcome, error.status, error.sent) == (Outcome.TIMEOUT, status, True)
    assert len(server.requests) == 1


# -- rule 5: the route timeout is a deadline for the whole attempt --------------------------


async def test_a_body_trickling_in_is_cut_at_the_deadline_with_its_ids_kept() -> None:
    """Each piece comes well within any idle timer; the whole answer never does."""

    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\nX-Request-Id: req-slow\r\n\r\n"
        )
        for _ in range(100):
            await peer.send(b"x" * 100)
            await asyncio.sleep(0.1)

    async with serve(handler) as server:
        started = time.monotonic()
        error = await attempt(server.url, timeout=1.0)
        waited = time.monotonic() - started
    assert 0.9 <= waited < 3.0
    assert (error.outcome, error.status, error.sent) == (Outcome.TIMEOUT, 200, True)
    assert error.provider_request_id == "req-slow"
    assert "timeout" in error.message


async def test_a_server_that_never_answers_is_cut_at_the_deadline() -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.until_hangup()

    async with serve(handler) as server:
        started = time.monotonic()
        error = await attempt(server.url, timeout=0.5)
        waited = time.monotonic() - started
    assert 0.4 <= waited < 2.5
    assert (error.outcome, error.status, error.sent) == (Outcome.TIMEOUT, None, True)
    assert len(server.requests) == 1


async def test_the_deadline_given_by_the_caller_wins_and_is_on_the_exchange() -> None:
    async with (
        serve(replying(lambda _: json_reply(IMAGE_BODY))) as server,
        api(server.url, timeout=30.0) as client,
    ):
        deadline = anyio.current_time() + 5
        exchange = await send(client, GENERATE, "ir-1", deadline=deadline)
        assert exchange.deadline == deadline
        with pytest.raises(AttemptError) as late:
            await send(client, GENERATE, "ir-2", deadline=anyio.current_time() - 1)
    assert late.value.outcome is Outcome.TIMEOUT


# -- rule 6: Retry-After, retry-after-ms, x-ratelimit-reset-* ---------------------------------

RATE_LIMITED = b'{"error":{"code":"rate_limit_exceeded","message":"slow down","type":"requests"}}'


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ([("Retry-After", "86400")], 86400.0),
        ([("retry-after-ms", "1500"), ("Retry-After", "9")], 1.5),
        ([("x-ratelimit-reset-requests", "6m0s")], 360.0),
        (
            [("x-ratelimit-reset-requests", "20ms"), ("x-ratelimit-reset-tokens", "1h2m3.5s")],
            3723.5,
        ),
        ([("Retry-After", "2"), ("x-ratelimit-reset-requests", "6m0s")], 2.0),
    ],
    ids=["retry-after", "ms-first", "reset-only", "longest-reset", "retry-after-wins"],
)
async def test_a_429_says_how_long_to_wait(headers: list[tuple[str, str]], seconds: float) -> None:
    reply = json_reply(RATE_LIMITED, status=429, reason="Too Many Requests", headers=headers)
    async with serve(replying(lambda _: reply)) as server:
        error = await attempt(server.url)
    assert error.outcome is Outcome.RATE_LIMITED
    assert error.retry_after == pytest.approx(seconds)


async def test_rate_limit_headers_are_parsed_onto_the_error_and_the_exchange() -> None:
    limits = [
        ("x-ratelimit-limit-requests", "50"),
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-reset-requests", "1.2s"),
        ("x-ratelimit-limit-images", "5"),
        ("x-ratelimit-remaining-images", "4"),
        ("x-ratelimit-reset-images", "12s"),
    ]
    limited = json_reply(RATE_LIMITED, status=429, reason="Too Many Requests", headers=limits)
    fine = json_reply(IMAGE_BODY, headers=limits)

    async with serve(replying(lambda r: limited if r.body.endswith(b"429}") else fine)) as server:
        error = await attempt(server.url, PreparedRequest(endpoint="/x", json={"want": 429}))
        async with api(server.url) as client:
            exchange = await send(client, GENERATE, "ir-2")
    for limits_seen in (error.rate_limits, exchange.rate_limits):
        assert limits_seen is not None
        assert limits_seen.requests is not None
        assert limits_seen.images is not None
        assert (limits_seen.requests.limit, limits_seen.requests.remaining) == (50, 0)
        assert limits_seen.requests.reset_s == pytest.approx(1.2)
        assert (limits_seen.images.limit, limits_seen.images.remaining) == (5, 4)
        assert limits_seen.tokens is None
    # The wait is the reset of the window that ran out (requests), not the longest one.
    assert error.retry_after == pytest.approx(1.2)


# -- rule 7: redirects ----------------------------------------------------------------------


def redirector(status: int, location: str, *, times: int = 1) -> Handler:
    """Answers ``times`` requests with a redirect to ``location``, then with an image."""
    sent = {"n": 0}

    def reply(request: Received) -> bytes:
        if sent["n"] < times:
            sent["n"] += 1
            where = location.format(n=sent["n"])
            return response(b"", status=status, reason="Redirect", headers=[("Location", where)])
        return json_reply(IMAGE_BODY, headers=[("X-Request-Id", "req-final")])

    return replying(reply)


@pytest.mark.parametrize("status", [307, 308])
async def test_a_307_or_308_is_followed_with_the_same_body_and_the_final_url_kept(
    status: int,
) -> None:
    async with (
        serve(redirector(status, "/v2/images/generations")) as server,
        api(f"{server.url}/v1") as client,
    ):
        exchange = await send(client, GENERATE, "ir-1")
    first, second = server.requests
    assert (first.target, second.target) == ("/v1/images/generations", "/v2/images/generations")
    assert first.body == second.body == b'{"prompt":"a lighthouse"}'
    assert second.headers["authorization"] == "Bearer sk-test"
    assert second.headers["x-client-request-id"] == "ir-1"
    assert exchange.url == f"{server.url}/v2/images/generations"
    assert exchange.provider_request_id == "req-final"


async def test_a_multipart_edit_is_re_sent_whole_on_a_307() -> None:
    image = os.urandom(300_000)
    edit = PreparedRequest(
        endpoint="/images/edits",
        data={"prompt": "a cat"},
        files=[("image[]", ("cat.png", image, "image/png"))],
    )
    async with serve(redirector(307, "/moved/edits")) as server, api(server.url) as client:
        await send(client, edit, "ir-1")
    first, second = server.requests
    assert second.target == "/moved/edits"
    assert first.body == second.body
    assert image in second.body


async def test_more_than_three_hops_stop_the_route() -> None:
    async with serve(redirector(307, "/hop/{n}", times=4)) as server:
        error = await attempt(server.url)
    assert len(server.requests) == 4  # the first request, then three hops followed
    assert (error.outcome, error.error_code, error.stops_route) == (
        Outcome.INVALID_REQUEST,
        REDIRECT,
        True,
    )
    assert "/hop/4" in error.message


async def test_a_307_to_plain_http_on_another_host_is_not_followed() -> None:
    async with serve(redirector(307, "http://elsewhere.invalid/v1/images")) as server:
        error = await attempt(server.url)
    assert len(server.requests) == 1
    assert (error.error_code, error.stops_route, error.status) == (REDIRECT, True, 307)
    assert "http://elsewhere.invalid/v1/images" in error.message


@pytest.mark.parametrize("status", [301, 302, 303])
async def test_a_301_302_or_303_stops_the_route_naming_the_location(status: int) -> None:
    async with serve(redirector(status, "https://api.moved.example/v1/images")) as server:
        error = await attempt(server.url)
    assert len(server.requests) == 1
    assert (error.outcome, error.error_code, error.stops_route) == (
        Outcome.INVALID_REQUEST,
        REDIRECT,
        True,
    )
    assert error.status == status
    assert "https://api.moved.example/v1/images" in error.message


# -- answers no parser reads; early answers; connections --------------------------------------


async def test_an_answer_that_cannot_be_parsed_is_lost_not_resent_and_its_connection_dropped() -> (
    None
):
    """Duplicate ``Content-Length`` headers: aiohttp's parser refuses them. The server had the
    whole request (it was answering), so the attempt may be billed: ``lost``, never re-sent."""
    broken = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Length: %d\r\n\r\n%b" % (
        len(IMAGE_BODY),
        len(IMAGE_BODY),
        IMAGE_BODY,
    )
    replies = iter([broken, json_reply(IMAGE_BODY)])
    async with serve(replying(lambda _: next(replies))) as server, api(server.url) as client:
        with pytest.raises(AttemptError) as failed:
            await send(client, GENERATE, "ir-1")
        after = await send(client, GENERATE, "ir-2")
    error = failed.value
    assert (error.outcome, error.sent) == (Outcome.LOST, True)
    assert not error.outcome.retryable
    assert "malformed answer" in error.message
    assert [r.headers["x-client-request-id"] for r in server.requests] == ["ir-1", "ir-2"]
    assert server.connections == 2  # the misbehaving connection was not reused
    assert after.status == 200


async def test_an_early_401_to_a_large_upload_is_read_and_stops_the_route() -> None:
    """The server answers before reading the upload, then closes its side and drains the rest
    (as nginx does): still a 401, not a network error (a bad key must stop the route)."""
    body = b'{"error":{"code":"invalid_api_key","message":"Incorrect API key","type":"x"}}'

    async def handler(peer: Peer) -> None:
        await peer.reader.readuntil(b"\r\n\r\n")
        await peer.send(json_reply(body, status=401, reason="Unauthorized"))
        peer.writer.write_eof()
        await peer.until_hangup()

    edit = PreparedRequest(
        endpoint="/images/edits",
        data={"prompt": "a cat"},
        files=[("image", ("big.png", os.urandom(8 * 1024 * 1024), "image/png"))],
    )
    async with serve(handler) as server:
        error = await attempt(server.url, edit)
    assert (error.outcome, error.status, error.stops_route) == (Outcome.AUTH, 401, True)


async def test_a_refused_connection_is_a_network_error_of_a_request_never_sent() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        error = await attempt(f"http://127.0.0.1:{sock.getsockname()[1]}")
    assert (error.outcome, error.sent, error.status) == (Outcome.NETWORK, False, None)


async def test_a_connection_dropped_after_the_request_is_a_network_error_of_a_sent_one() -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()

    async with serve(handler) as server:
        error = await attempt(server.url)
    assert (error.outcome, error.sent) == (Outcome.NETWORK, True)
    assert len(server.requests) == 1


async def test_the_pool_never_opens_more_connections_than_the_limits_allow() -> None:
    open_now, most = 0, 0

    async def handler(peer: Peer) -> None:
        nonlocal open_now, most
        open_now += 1
        most = max(most, open_now)
        try:
            while await peer.request() is not None:
                await asyncio.sleep(0.05)
                await peer.send(json_reply(IMAGE_BODY))
        finally:
            open_now -= 1

    limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)
    async with serve(handler) as server:
        client = ApiClient(server.url, api_key="k", timeout=httpx.Timeout(5.0), limits=limits)
        async with client, anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(send, client, GENERATE, f"ir-{i}")
    assert len(server.requests) == 8
    assert most == 2
    assert server.connections == 2


async def test_a_private_ca_named_by_ssl_cert_file_is_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert = certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    reply = json_reply(IMAGE_BODY)
    async with serve(replying(lambda _: reply), tls=server_tls(cert)) as server:
        assert server.url.startswith("https://")
        async with api(server.url, tls=httpx.create_ssl_context()) as client:
            exchange = await send(client, GENERATE, "ir-1")
    assert exchange.status == 200


class SlowMemory:
    """A memory budget that makes every large body wait ``wait`` seconds for its share."""

    def __init__(self, wait: float) -> None:
        self.wait = wait
        self.held = 0

    def cost(self, content_length: int | None) -> int:
        return 3 * (content_length or 0)

    async def acquire(self, amount: int) -> int:
        await anyio.sleep(self.wait)
        self.held += amount
        return amount

    async def release(self, amount: int) -> None:
        self.held -= amount


async def test_waiting_for_memory_does_not_count_against_the_deadline() -> None:
    """The image was delivered: our own queue for memory must not turn it into a timeout."""
    memory = SlowMemory(wait=0.8)
    async with (
        serve(replying(lambda _: json_reply(IMAGE_BODY))) as server,
        api(server.url, timeout=0.4) as client,
    ):
        exchange = await send(client, GENERATE, "ir-1", memory)
    assert exchange.status == 200
    assert exchange.held == memory.held == 3 * len(IMAGE_BODY)


async def test_cut_off_while_waiting_for_a_connection_is_a_timeout_never_sent() -> None:
    """The deadline ran out before the request's first byte was written: it costs nothing."""

    async def handler(peer: Peer) -> None:  # holds its connection with a body that trickles
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        for _ in range(1000):
            await peer.send(b"x")
            await asyncio.sleep(0.05)

    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    timeout = httpx.Timeout(0.5, pool=10.0)
    async with serve(handler) as server:
        client = ApiClient(server.url, api_key="k", timeout=timeout, limits=limits)
        async with client, anyio.create_task_group() as tg:

            async def hung() -> None:
                with contextlib.suppress(AttemptError):
                    await send(client, GENERATE, "ir-hung", deadline=anyio.current_time() + 30)

            tg.start_soon(hung)
            with anyio.fail_after(5):
                while not server.requests:
                    await anyio.sleep(0.01)
            with pytest.raises(AttemptError) as queued:
                await send(client, GENERATE, "ir-queued")
            tg.cancel_scope.cancel()
    assert queued.value.outcome is Outcome.TIMEOUT
    assert queued.value.sent is False
    assert [r.headers["x-client-request-id"] for r in server.requests] == ["ir-hung"]


async def test_a_redirect_to_another_origin_does_not_carry_the_api_key(tmp_path: Path) -> None:
    """A 307 to https on another host is followed, as httpx's own redirects are, without the
    key: ``Authorization`` belongs to the origin that was asked."""
    cert = certificate(tmp_path)
    tls = ssl.create_default_context(cafile=str(cert))
    done = response(b'{"created":1,"data":[]}', headers=[("Content-Type", "application/json")])
    async with serve(replying(lambda r: done), tls=server_tls(cert)) as elsewhere:
        # "localhost" is another host than "127.0.0.1", the origin the client was given.
        target = f"https://localhost:{elsewhere.port}/v1/images/generations"
        moved = response(
            b"", status=307, reason="Temporary Redirect", headers=[("Location", target)]
        )
        async with (
            serve(replying(lambda r: moved), tls=server_tls(cert)) as origin,
            ApiClient(
                f"https://127.0.0.1:{origin.port}/v1",
                api_key="sk-SECRET-KEY",
                timeout=httpx.Timeout(5.0),
                tls=tls,
            ) as client,
        ):
            prepared = PreparedRequest(endpoint="/images/generations", json={"prompt": "x"})
            await send(client, prepared, "ir-redirect")
    [seen] = elsewhere.requests
    assert "authorization" not in seen.headers
