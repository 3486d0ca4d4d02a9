"""The HTTP transport (``runner.http.transport``) against real servers on 127.0.0.1.

Each test starts a small asyncio server whose handler plays one server behaviour (keep-alive,
hang-ups, cut bodies, garbage, TLS...) and records every request it read, so a test checks both
sides: what the caller got, and what the server saw (a request is never sent twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import os
import re
import resource
import socket
import ssl
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from runner.http.client import ApiClient
from runner.http.transport import Transport
from runner.http.wire_errors import UnreadableResponse
from runner.shapes.base import PreparedRequest

from .loopback import Peer, Received, echo, replying, response, serve

pytestmark = pytest.mark.anyio

TIMEOUT = httpx.Timeout(5.0)


def wire(tls: ssl.SSLContext | None = None, limits: httpx.Limits | None = None) -> Transport:
    return Transport(tls or ssl.create_default_context(), limits)


def client(transport: Transport, timeout: httpx.Timeout = TIMEOUT) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport, timeout=timeout)


async def read_into(received: bytearray, streamed: httpx.Response) -> None:
    """Append the body's bytes to ``received`` as they arrive (kept if reading fails)."""
    async for chunk in streamed.aiter_bytes():
        received += chunk


async def fetch(transport: Transport, url: str) -> httpx.Response:
    """A GET straight through ``transport`` (as ``ApiClient`` sends), its body read."""
    request = httpx.Request("GET", url, extensions={"timeout": TIMEOUT.as_dict()})
    answer = await transport.handle_async_request(request)
    try:
        await answer.aread()
    finally:
        await answer.aclose()
    return answer


def free_port_refusing() -> socket.socket:
    """A bound socket that never listens: connecting to its port is refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def multipart_fields(request: Received) -> dict[str, tuple[bytes, bytes]]:
    """``name -> (part headers, part bytes)`` of a ``multipart/form-data`` body."""
    boundary = request.headers["content-type"].split("boundary=")[1].encode()
    fields = {}
    for part in request.body.split(b"--" + boundary)[1:-1]:
        head, _, value = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]*)"', head)
        assert name is not None
        fields[name.group(1).decode()] = (head, value.removesuffix(b"\r\n"))
    return fields


# -- requests and responses -----------------------------------------------------------------


async def test_a_json_post_round_trips_through_an_httpx_client() -> None:
    payload = {"model": "gpt-image-1", "prompt": "un café ☕", "n": 2}
    reply = response(
        b'{"id":"img-1"}',
        status=201,
        reason="Created Here",
        headers=[("Content-Type", "application/json"), ("X-Multi", "a"), ("X-Multi", "b")],
    )
    transport = wire()
    answer = replying(lambda request: reply if request.method == "POST" else response())
    async with serve(answer) as server, client(transport) as http:
        created = await http.post(
            f"{server.url}/v1/images?size=1024x1024&n=2", json=payload, headers={"X-Trace": "t-1"}
        )
        # The same connection then frames a second request correctly: the first's
        # Content-Length matched the bytes sent.
        after = await http.get(f"{server.url}/after")

    first, second = server.requests
    assert first.method == "POST"
    assert first.target == "/v1/images?size=1024x1024&n=2"
    assert first.headers["host"] == f"127.0.0.1:{server.port}"
    assert first.headers["content-length"] == str(len(first.body))
    assert first.headers["content-type"] == "application/json"
    assert first.headers["x-trace"] == "t-1"
    assert json.loads(first.body) == payload
    assert (second.method, second.target, second.body) == ("GET", "/after", b"")

    assert created.status_code == 201
    assert created.reason_phrase == "Created Here"
    assert created.http_version == "HTTP/1.1"
    assert created.headers["content-type"] == "application/json"
    assert created.headers.get_list("x-multi") == ["a", "b"]
    assert created.json() == {"id": "img-1"}
    assert (after.status_code, after.text) == (200, "ok")
    assert server.connections == 1


async def test_the_api_client_sends_a_prepared_request_with_its_headers() -> None:
    payload = {"model": "gpt-image-1", "prompt": "un café ☕"}
    reply = response(b'{"data":[]}', headers=[("Content-Type", "application/json")])
    async with (
        serve(replying(lambda _: reply)) as server,
        ApiClient(f"{server.url}/v1/", api_key="sk-test", timeout=TIMEOUT) as api,
    ):
        assert isinstance(api._wire, Transport)  # the one wire carries these calls
        prepared = PreparedRequest(endpoint="/images/generations", json=payload)
        replies = []
        for request_id in ("cr-1", "cr-2"):
            answer = await api.send(api.request(prepared, request_id))
            try:
                replies.append((answer.status_code, await answer.aread()))
            finally:
                await answer.aclose()

    sent = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    assert replies == [(200, b'{"data":[]}')] * 2
    assert [got.headers["x-client-request-id"] for got in server.requests] == ["cr-1", "cr-2"]
    got = server.requests[0]
    assert (got.method, got.target) == ("POST", "/v1/images/generations")
    assert got.headers["authorization"] == "Bearer sk-test"
    assert got.headers["host"] == f"127.0.0.1:{server.port}"
    assert got.headers["content-type"] == "application/json"
    assert got.headers["content-length"] == str(len(sent))
    assert got.headers["accept-encoding"] == "gzip, deflate"
    assert got.body == sent
    assert server.connections == 1


async def test_the_api_client_goes_through_an_http_proxy_when_one_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reply = response(b"{}", headers=[("Content-Type", "application/json")])
    async with serve(replying(lambda _: reply)) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        async with ApiClient("http://api.invalid/v1", api_key="sk-p", timeout=TIMEOUT) as api:
            assert isinstance(api._wire, Transport)  # no switch: the same wire, proxied
            answer = await api.send(api.request(PreparedRequest(endpoint="/x", json={}), "cr"))
            await answer.aread()
            await answer.aclose()
    [got] = proxy.requests
    assert got.target == "http://api.invalid/v1/x"  # absolute form: a request to a proxy
    assert got.headers["x-client-request-id"] == "cr"
    assert answer.status_code == 200


async def test_a_gzip_body_is_decoded() -> None:
    payload = json.dumps({"data": [{"b64_json": "QUJD" * 50_000}]}).encode()
    reply = response(
        gzip.compress(payload),
        headers=[("Content-Encoding", "gzip"), ("Content-Type", "application/json")],
    )
    transport = wire()
    async with serve(replying(lambda _: reply)) as server:
        async with client(transport) as http, http.stream("GET", server.url) as streamed:
            pieces = [piece async for piece in streamed.aiter_bytes()]
        async with ApiClient(server.url, api_key="k", timeout=TIMEOUT) as api:
            answer = await api.send(api.request(PreparedRequest(endpoint="/g", json={}), "cr"))
            try:
                via_api = await answer.aread()
            finally:
                await answer.aclose()
    assert b"".join(pieces) == payload
    assert via_api == payload


async def test_a_chunked_body_is_decoded_and_the_connection_reused() -> None:
    chunks = [b"hello ", b"chunked " * 5000, b"world"]

    async def handler(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for chunk in chunks:
                await peer.send(b"%x;ext=1\r\n%b\r\n" % (len(chunk), chunk))
            await peer.send(b"0\r\nX-Trailer: t\r\n\r\n")

    transport = wire()
    async with serve(handler) as server, client(transport) as http:
        bodies = [(await http.get(f"{server.url}/{i}")).content for i in range(2)]
    assert bodies == [b"".join(chunks)] * 2
    assert server.connections == 1


async def test_a_body_delimited_by_the_end_of_the_connection_is_read_whole() -> None:
    parts = [os.urandom(100_000) for _ in range(3)]

    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        for part in parts:
            await peer.send(part)

    transport = wire()
    async with serve(handler) as server, client(transport) as http:
        first = await http.get(f"{server.url}/one")
        second = await http.get(f"{server.url}/two")
    assert first.content == second.content == b"".join(parts)
    assert server.connections == 2
    assert server.targets() == ["/one", "/two"]


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\n\r\n",
    ],
    ids=["204", "304"],
)
async def test_a_bodyless_response_leaves_the_connection_reusable(head: bytes) -> None:
    transport = wire()
    async with serve(replying(lambda _: head)) as server, client(transport) as http:
        answers = [await http.get(f"{server.url}/{i}") for i in range(3)]
    assert [(answer.status_code, answer.content) for answer in answers] == [
        (int(head[9:12]), b"")
    ] * 3
    assert server.connections == 1


async def test_a_large_body_arrives_intact_and_an_unread_one_stays_out_of_memory() -> None:
    """Until the body is read, the client stops reading the socket: the rest waits at the
    server (the run's memory budget only works if unread bodies stay out of the process)."""
    body = os.urandom(24 * 1024 * 1024)
    writers: list[asyncio.StreamWriter] = []

    async def handler(peer: Peer) -> None:
        writers.append(peer.writer)
        while await peer.request() is not None:
            await peer.send(response(body))

    transport = wire()
    size, digest = 0, hashlib.sha256()
    async with serve(handler) as server:
        request = httpx.Request(
            "GET", f"{server.url}/big", extensions={"timeout": TIMEOUT.as_dict()}
        )
        big = await transport.handle_async_request(request)
        try:
            pending = writers[0].transport.get_write_buffer_size
            async with asyncio.timeout(5):
                last = -1
                while pending() != last:  # until the socket stops moving
                    last = pending()
                    await asyncio.sleep(0.1)
            assert pending() > 4 * 1024 * 1024
            async for chunk in big.aiter_bytes():
                size += len(chunk)
                digest.update(chunk)
        finally:
            await big.aclose()
            await transport.aclose()
    assert size == len(body)
    assert digest.hexdigest() == hashlib.sha256(body).hexdigest()


async def test_a_streamed_multipart_upload_arrives_intact() -> None:
    image = os.urandom(3 * 1024 * 1024)
    transport = wire()
    async with serve(replying(lambda _: response(b"{}"))) as server, client(transport) as http:
        answer = await http.post(
            f"{server.url}/v1/images/edits",
            data={"prompt": "a cat"},
            files={"image": ("cat.png", image, "image/png")},
        )
    assert answer.status_code == 200
    [got] = server.requests
    assert got.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert "transfer-encoding" not in got.headers  # the length was known: sent up front
    fields = multipart_fields(got)
    assert set(fields) == {"prompt", "image"}
    assert fields["prompt"][1] == b"a cat"
    head, sent = fields["image"]
    assert b'filename="cat.png"' in head
    assert b"Content-Type: image/png" in head
    assert len(sent) == len(image)
    assert sent == image


async def test_a_streamed_body_of_unknown_length_is_sent_chunked() -> None:
    parts = [os.urandom(100_000) for _ in range(5)]

    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    transport = wire()
    async with serve(replying(echo)) as server, client(transport) as http:
        answer = await http.post(f"{server.url}/upload", content=body())
        after = await http.get(f"{server.url}/after")  # the chunked body was terminated
    assert (answer.text, after.text) == ("/upload", "/after")
    got = server.requests[0]
    assert got.headers["transfer-encoding"] == "chunked"
    assert got.body == b"".join(parts)
    assert server.connections == 1


# -- keep-alive -----------------------------------------------------------------------------


async def test_sequential_requests_reuse_one_connection() -> None:
    transport = wire()
    async with serve(replying(echo)) as server, client(transport) as http:
        texts = [(await http.get(f"{server.url}/n/{i}")).text for i in range(20)]
    assert texts == [f"/n/{i}" for i in range(20)]
    assert server.connections == 1
    assert server.targets() == texts


async def test_concurrent_requests_open_a_connection_each_then_reuse_them() -> None:
    # The server answers only once 8 requests are in flight at once: the transport must
    # carry them concurrently (8 connections), and a second burst must reuse those 8.
    barrier = asyncio.Barrier(8)

    async def handler(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            await barrier.wait()
            await peer.send(echo(request))

    transport = wire()
    async with serve(handler) as server, client(transport) as http:
        for burst in ("a", "b"):
            paths = [f"/{burst}/{i}" for i in range(8)]
            answers = await asyncio.gather(*(http.get(server.url + path) for path in paths))
            assert [answer.text for answer in answers] == paths
    assert server.connections == 8
    assert sorted(server.targets()) == sorted(f"/{b}/{i}" for b in "ab" for i in range(8))


async def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    hung_up = asyncio.Event()

    async def handler(peer: Peer) -> None:
        # Advertises keep-alive, then closes the idle connection anyway.
        request = await peer.request()
        assert request is not None
        await peer.send(response(request.target.encode(), headers=[("Connection", "keep-alive")]))
        peer.writer.close()
        await peer.writer.wait_closed()
        hung_up.set()

    transport = wire()
    async with serve(handler) as server, client(transport) as http:
        first = await http.get(f"{server.url}/first")
        await asyncio.wait_for(hung_up.wait(), 5)
        second = await http.get(f"{server.url}/second")
    assert (first.text, second.text) == ("/first", "/second")
    assert server.connections == 2
    assert server.targets() == ["/first", "/second"]  # each seen once


async def test_a_connection_closed_just_before_the_next_request_is_not_used() -> None:
    # The server's FIN has arrived but the loop has not run since (the close and the next
    # request happen in one step): the request must go out on a new connection, not be lost.
    writers: list[asyncio.StreamWriter] = []

    async def handler(peer: Peer) -> None:
        writers.append(peer.writer)
        request = await peer.request()
        assert request is not None
        await peer.send(echo(request))
        await peer.until_hangup()

    transport = wire()
    async with serve(handler) as server:
        try:
            first = await fetch(transport, f"{server.url}/first")
            writers[0].get_extra_info("socket").shutdown(socket.SHUT_RDWR)
            second = await fetch(transport, f"{server.url}/second")
        finally:
            await transport.aclose()
    assert (first.text, second.text) == ("/first", "/second")
    assert server.connections == 2
    assert server.targets() == ["/first", "/second"]


async def test_a_response_marked_connection_close_is_not_reused() -> None:
    reply = response(headers=[("Connection", "close")])
    transport = wire()
    async with serve(replying(lambda _: reply)) as server, client(transport) as http:
        answers = [await http.get(f"{server.url}/{i}") for i in range(2)]
    assert [answer.text for answer in answers] == ["ok", "ok"]
    assert server.connections == 2
    assert server.targets() == ["/0", "/1"]


async def test_bytes_after_a_whole_response_do_not_leak_into_it() -> None:
    """A second message in the same packet: the first answer comes back whole and alone, and
    the connection, whose stream is no longer trustworthy, is not reused."""
    extra = response(b"stray", headers=[("X-Stray", "1")])
    transport = wire()
    async with (
        serve(replying(lambda r: response(r.target.encode()) + extra)) as server,
        client(transport) as http,
    ):
        answers = [await http.get(f"{server.url}/{i}") for i in range(2)]
    assert [(a.text, a.headers.get("x-stray")) for a in answers] == [("/0", None), ("/1", None)]
    assert server.connections == 2
    assert server.targets() == ["/0", "/1"]


async def test_a_response_closed_before_its_body_was_read_is_not_reused() -> None:
    big = b"x" * 1_000_000
    transport = wire()
    async with (
        serve(replying(lambda r: response(big if r.target == "/big" else b"small"))) as server,
        client(transport) as http,
    ):
        async with http.stream("GET", f"{server.url}/big") as unread:
            assert unread.status_code == 200
        after = await http.get(f"{server.url}/small")
    assert after.text == "small"
    assert server.connections == 2
    assert server.targets() == ["/big", "/small"]


async def test_an_expired_idle_connection_is_not_reused() -> None:
    transport = wire(limits=httpx.Limits(keepalive_expiry=0.0))
    async with serve(replying(echo)) as server, client(transport) as http:
        texts = [(await http.get(f"{server.url}/{i}")).text for i in range(2)]
    assert texts == ["/0", "/1"]
    assert server.connections == 2
    assert server.targets() == ["/0", "/1"]


async def test_keep_alive_works_with_file_descriptors_above_1024() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:
        pytest.skip(f"RLIMIT_NOFILE is {soft}: cannot hold 1100 descriptors open")
    transport = wire()
    fillers: list[int] = []
    try:
        async with serve(replying(echo)) as server, client(transport) as http:
            # Every descriptor below 1100 taken: the connection's socket gets a higher one.
            while not fillers or fillers[-1] < 1100:
                fillers.append(os.open(os.devnull, os.O_RDONLY))
            first = await http.get(f"{server.url}/one")
            second = await http.get(f"{server.url}/two")
    finally:
        for fd in fillers:
            os.close(fd)
    assert (first.text, second.text) == ("/one", "/two")
    assert server.connections == 1


# -- failures: never re-sent ----------------------------------------------------------------


@pytest.mark.parametrize("reused", [False, True], ids=["fresh", "reused"])
async def test_a_request_dropped_unanswered_raises_and_is_not_resent(reused: bool) -> None:
    async def handler(peer: Peer) -> None:
        if reused:
            await peer.request()
            await peer.send(response())
        await peer.request()  # ... and hang up without a word

    transport = wire()
    async with serve(handler) as server, client(transport) as http:
        if reused:
            assert (await http.get(f"{server.url}/warm")).text == "ok"
        with pytest.raises(httpx.RemoteProtocolError, match="disconnected"):
            await http.post(f"{server.url}/dropped", content=b"pay once")
    assert server.targets() == (["/warm", "/dropped"] if reused else ["/dropped"])
    assert server.requests[-1].body == b"pay once"
    assert server.connections == 1


async def test_a_body_cut_short_raises_a_read_error() -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)

    transport = wire()
    received = bytearray()
    async with (
        serve(handler) as server,
        client(transport) as http,
        http.stream("GET", server.url) as cut,
    ):
        assert cut.status_code == 200
        with pytest.raises(httpx.ReadError, match="not completed"):
            await read_into(received, cut)
    assert received == b"x" * 100
    assert server.connections == 1


async def test_a_server_silent_after_the_request_times_out() -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.until_hangup()

    transport = wire()
    timeout = httpx.Timeout(5.0, read=0.3)
    async with serve(handler) as server, client(transport, timeout) as http:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            await http.get(server.url)
        waited = time.monotonic() - started
    assert 0.25 <= waited < 2.0
    assert len(server.requests) == 1


async def test_a_server_silent_mid_body_times_out_while_reading() -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"y" * 100)
        await peer.until_hangup()

    transport = wire()
    received = bytearray()
    timeout = httpx.Timeout(5.0, read=0.3)
    async with (
        serve(handler) as server,
        client(transport, timeout) as http,
        http.stream("GET", server.url) as stalled,
    ):
        assert stalled.status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            await read_into(received, stalled)
    assert received == b"y" * 100


@pytest.mark.parametrize(
    "garbage",
    [
        b"HELLO WORLD\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n",
    ],
    ids=["status-line", "status-code", "content-length"],
)
async def test_a_malformed_response_raises_a_protocol_error(garbage: bytes) -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(garbage)
        await peer.until_hangup()  # the client must not wait for the connection to close

    transport = wire()
    async with serve(handler) as server, client(transport) as http:
        with pytest.raises(UnreadableResponse, match="malformed"):
            await http.get(server.url)
    assert len(server.requests) == 1


async def test_a_refused_connection_raises_a_connect_error() -> None:
    transport = wire()
    with free_port_refusing() as sock:
        port = sock.getsockname()[1]
        async with client(transport) as http:
            with pytest.raises(httpx.ConnectError):
                await http.get(f"http://127.0.0.1:{port}/")


async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent() -> None:
    transport = wire()
    async with serve(replying(echo)) as server, client(transport) as http:
        assert (await http.get(f"{server.url}/a")).text == "/a"
        with pytest.raises(httpx.LocalProtocolError):
            await http.get(f"{server.url}/b", headers={"X-Note": "hi\r\nX-Injected: 1"})
        assert (await http.get(f"{server.url}/c")).text == "/c"
    assert server.targets() == ["/a", "/c"]
    assert all("x-injected" not in got.headers for got in server.requests)


# -- HTTP corners -----------------------------------------------------------------------------


async def test_a_head_response_has_no_body_whatever_its_content_length() -> None:
    def reply(request: Received) -> bytes:
        whole = response(b"z" * 100)
        return whole[:-100] if request.method == "HEAD" else whole

    transport = wire()
    timeout = httpx.Timeout(5.0, read=0.3)
    async with serve(replying(reply)) as server, client(transport, timeout) as http:
        head = await http.head(server.url)
        body = await http.get(server.url)
    assert (head.headers["content-length"], head.content) == ("100", b"")
    assert body.content == b"z" * 100
    assert server.connections <= 2


async def test_an_interim_response_is_skipped() -> None:
    async def handler(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            await asyncio.sleep(0.02)  # a separate packet, as a real server would send it
            await peer.send(response(b"final"))

    transport = wire()
    async with serve(handler) as server, client(transport) as http:
        answer = await http.post(server.url, content=b"data")
        assert (answer.status_code, answer.reason_phrase, answer.text) == (200, "OK", "final")


# -- TLS --------------------------------------------------------------------------------------


async def test_https_with_a_trusted_certificate_keeps_its_connection_alive(
    tls_pair: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_tls, client_tls = tls_pair
    transport = wire(client_tls)
    async with serve(replying(echo), tls=server_tls) as server, client(transport) as http:
        assert server.url.startswith("https://")
        texts = [(await http.get(f"{server.url}/{i}")).text for i in range(3)]
    assert texts == ["/0", "/1", "/2"]
    assert server.connections == 1


async def test_https_refuses_a_certificate_it_does_not_trust(
    tls_pair: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_tls, _ = tls_pair
    transport = wire(ssl.create_default_context())
    async with serve(replying(echo), tls=server_tls) as server, client(transport) as http:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await http.get(server.url)
    assert server.requests == []


# -- proxies ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "proxied"),
    [
        pytest.param({}, False, id="no-proxy"),
        pytest.param({"HTTP_PROXY": "{proxy}"}, True, id="http"),
        pytest.param({"http_proxy": "{proxy}"}, True, id="lower"),
        pytest.param({"HTTPS_PROXY": "{proxy}"}, False, id="other-scheme"),
        pytest.param({"HTTP_PROXY": "{proxy}", "NO_PROXY": "localhost,api.test"}, False, id="host"),
        pytest.param({"HTTP_PROXY": "{proxy}", "NO_PROXY": ".test"}, False, id="domain"),
        pytest.param({"HTTP_PROXY": "{proxy}", "NO_PROXY": "other.org"}, True, id="elsewhere"),
    ],
)
async def test_the_same_wire_honours_the_proxy_variables(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], proxied: bool
) -> None:
    """``HTTP(S)_PROXY`` and ``NO_PROXY`` decide where a call goes; the wire stays the same."""
    reply = response(b"{}", headers=[("Content-Type", "application/json")])
    async with serve(replying(lambda _: reply)) as proxy, serve(replying(echo)) as origin:
        for name, value in env.items():
            monkeypatch.setenv(name, value.format(proxy=proxy.url))
        # api.test resolves nowhere: only through the proxy, or to the origin via the IP.
        target = "http://api.test/v1" if proxied else f"{origin.url}/v1"
        if not proxied and env:
            monkeypatch.setenv("NO_PROXY", env.get("NO_PROXY", "") + ",127.0.0.1")
        async with ApiClient(target, api_key="sk-p", timeout=TIMEOUT) as api:
            assert isinstance(api._wire, Transport)
            answer = await api.send(api.request(PreparedRequest(endpoint="/x", json={}), "cr"))
            await answer.aread()
            await answer.aclose()
    assert answer.status_code == 200
    if proxied:
        [got] = proxy.requests
        assert got.target == "http://api.test/v1/x"
        assert origin.requests == []
    else:
        [got] = origin.requests
        assert got.target == "/v1/x"
        assert proxy.requests == []


async def test_https_goes_through_an_https_proxy_tunnel(
    monkeypatch: pytest.MonkeyPatch, tls_pair: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """``HTTPS_PROXY``: a CONNECT tunnel to the origin, TLS end to end through it."""
    server_tls, client_tls = tls_pair
    tunnels: list[str] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def proxy_handler(peer: Peer) -> None:
        head = await peer.reader.readuntil(b"\r\n\r\n")
        method, target, _ = head.split(b"\r\n")[0].decode().split(" ")
        tunnels.append(f"{method} {target}")
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        await peer.send(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        await asyncio.gather(pipe(peer.reader, up_writer), pipe(up_reader, peer.writer))

    async with (
        serve(replying(echo), tls=server_tls) as origin,
        serve(proxy_handler) as proxy,
    ):
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        transport = wire(client_tls)
        assert transport.proxy_for(httpx.URL(origin.url)) == proxy.url
        async with client(transport) as http:
            answer = await http.get(f"{origin.url}/through")
    assert answer.text == "/through"
    assert tunnels == [f"CONNECT 127.0.0.1:{origin.port}"]
    assert origin.targets() == ["/through"]


async def test_an_attempts_request_does_not_show_the_api_key_when_printed() -> None:
    """What an attempt hands the wire names no key in its repr (as ``httpx.Headers``, whose
    repr masks ``Authorization``): a traceback or a log line that prints it leaks nothing."""
    async with ApiClient("http://api.invalid/v1", api_key="sk-secret", timeout=TIMEOUT) as api:
        posts = [
            PreparedRequest(endpoint="/images/generations", json={"prompt": "a lamp"}),
            PreparedRequest(
                endpoint="/images/edits",
                data={"prompt": "a lamp"},
                files=[("image[]", ("a.png", b"\x89PNG", "image/png"))],
            ),
        ]
        for prepared in posts:
            out = api.outgoing(prepared, "cr")
            assert ("authorization", "Bearer sk-secret") in out.headers
            assert "sk-secret" not in repr(out)
