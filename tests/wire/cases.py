"""The zoo's cases: what real servers, CDNs and one-api gateways were seen to write.

Each case is a handler for :mod:`tests.wire.server`. API requests (``/v1/…``) get the case's
answer; anything else is a URL result being fetched. The bytes are written out literally, so
a reader sees the exact wire each case stands for.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import anyio

from .server import Conn, Handler, Head, Seen, Zoo, answer

JSON = "Content-Type: application/json"
DATE = "Date: Wed, 02 Dec 2026 03:00:00 GMT"
#: A request id the way one-api gateways put it in their messages.
GATEWAY_ID = "20251202030000123456789abcdefgh"
QUOTA_BODY = json.dumps(
    {
        "error": {
            "code": "insufficient_user_quota",
            "message": f"user quota is not enough, remaining: $0.0012 (request id: {GATEWAY_ID})",
            "type": "new_api_error",
        }
    }
).encode()
UNAUTHORIZED = {
    "code": "invalid_api_key",
    "message": "Incorrect API key provided: sk-zoo.",
    "type": "invalid_request_error",
}
TOO_LARGE = {"code": None, "message": "Request entity too large", "type": "invalid_request_error"}
CDN_PAGES = {
    "502": b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n",
    "504": b"<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n"
    b"<center><h1>504 Gateway Time-out</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n",
    "524": b'<!DOCTYPE html>\n<html lang="en-US">\n<head><title>api.example.com | 524: A '
    b"timeout occurred</title></head>\n<body><h1>A timeout occurred</h1><p>The origin web "
    b"server timed out responding to this request.</p><p>Cloudflare Ray ID: 8e1f2a3b4c5d6e7f"
    b"</p></body>\n</html>\n",
}
CDN_REASONS = {"502": "Bad Gateway", "504": "Gateway Timeout", "524": "Origin Time-out"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    """A scripted server behaviour, and how the client is meant to use it."""

    name: str
    handler: Handler
    #: Send edits (multipart, with a source image) instead of generations.
    edit: bool = False
    #: Make that source image large (megabytes), so the server can answer before reading it.
    large: bool = False
    #: The ``size`` the manifest asks for (the zoo's image is always the same small one).
    size: str | None = None
    #: Seconds a client should leave between two requests for the case to show.
    gap: float = 0.0
    #: The server closes connections without saying so: a client reusing one races the close.
    racy: bool = False


async def read_body(conn: Conn, head: Head, seen: Seen) -> bytes:
    """The request body, after a ``100 Continue`` if the client asked for one."""
    if (head.get("expect") or "").lower() == "100-continue":
        await conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    return await conn.body(head, seen)


async def serve_file(zoo: Zoo, conn: Conn, head: Head, seen: Seen) -> None:
    """``GET /files/<n>.png``: the image promised to API request ``n``."""
    await conn.body(head, seen)
    number = int(head.path.rsplit("/", 1)[-1].split(".")[0])
    zoo.by_number(number).delivered = True
    await answer(
        conn, seen, "200 OK", ["Content-Type: image/png", f"Content-Length: {len(zoo.image)}"]
    )
    await conn.write(zoo.image)


def api(respond: Handler, files: Handler = serve_file) -> Handler:
    """A handler answering API calls with ``respond`` and anything else with ``files``."""

    async def handler(zoo: Zoo, conn: Conn, head: Head, seen: Seen) -> None:
        await (respond if seen.api else files)(zoo, conn, head, seen)

    return handler


def image_200(
    headers: Callable[[bytes], Sequence[str]],
    *,
    status: str = "200 OK",
    eol: bytes = b"\r\n",
    encode: Callable[[bytes], bytes] = lambda body: body,
    b64: Callable[[str], str] | None = None,
    after: Callable[[Zoo, Conn], Awaitable[None]] | None = None,
) -> Handler:
    """A 200 carrying an image, framed by ``headers(body)`` (given the bytes on the wire)."""

    async def respond(zoo: Zoo, conn: Conn, head: Head, seen: Seen) -> None:
        await read_body(conn, head, seen)
        text = b64(zoo.image_b64()) if b64 else None
        body = encode(zoo.image_json(seen, b64=text))
        await answer(conn, seen, status, [DATE, *headers(body)], body, eol=eol)
        if after is not None:  # what the server does to the connection once it has answered
            await after(zoo, conn)

    return api(respond)


def plain(body: bytes) -> list[str]:
    return [JSON, f"Content-Length: {len(body)}"]


def chunked(body: bytes, *, trailers: Sequence[str] = (), extension: str = "") -> bytes:
    """``body`` in chunks of 1000 bytes, then the last chunk and ``trailers``."""
    out = b""
    for at in range(0, len(body), 1000):
        piece = body[at : at + 1000]
        out += f"{len(piece):x}{extension}\r\n".encode() + piece + b"\r\n"
    return out + b"0\r\n" + b"".join(t.encode() + b"\r\n" for t in trailers) + b"\r\n"


def mime_lines(eol: str) -> Callable[[str], str]:
    """Base64 broken into 76-character lines, as MIME encoders do."""
    return lambda text: eol.join(text[i : i + 76] for i in range(0, len(text), 76)) + eol


async def _close_quietly(zoo: Zoo, conn: Conn) -> None:
    await conn.close()


#: How long the server keeps an idle kept-alive connection open.
IDLE_CLOSE = 0.2


async def _close_when_idle(zoo: Zoo, conn: Conn) -> None:
    conn.idle_timeout = IDLE_CLOSE


async def _close_on_next(zoo: Zoo, conn: Conn) -> None:
    conn.close_on_next = True


async def _stray_crlf(zoo: Zoo, conn: Conn) -> None:
    await conn.write(b"\r\n")


def _with_body(
    framing: Callable[[bytes], list[str]], wire_body: Callable[[bytes], bytes]
) -> Handler:
    """A 200 whose header lines are ``framing(json)`` and whose body bytes ``wire_body(json)``."""

    async def respond(zoo: Zoo, conn: Conn, head: Head, seen: Seen) -> None:
        await read_body(conn, head, seen)
        body = zoo.image_json(seen)
        await answer(conn, seen, "200 OK", [DATE, *framing(body)], wire_body(body))

    return api(respond)


async def _http10(zoo: Zoo, conn: Conn, head: Head, seen: Seen) -> None:
    await read_body(conn, head, seen)
    body = zoo.image_json(seen)
    await answer(conn, seen, "HTTP/1.0 200 OK", [DATE, *plain(body)], body)
    await conn.close()


async def _eof_body(zoo: Zoo, conn: Conn, head: Head, seen: Seen) -> None:
    await read_body(conn, head, seen)
    body = zoo.image_json(seen)
    await answer(conn, seen, "200 OK", [DATE, JSON, "Connection: close"], body)
    await conn.close()


async def _continue_then_200(zoo: Zoo, conn: Conn, head: Head, seen: Seen) -> None:
    # Sent whether or not the client asked: servers may, and some proxies always do.
    await conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    await conn.body(head, seen)
    body = zoo.image_json(seen)
    await answer(conn, seen, "200 OK", [DATE, *plain(body)], body)


async def _early_hints(zoo: Zoo, conn: Conn, head: Head, seen: Seen) -> None:
    await read_body(conn, head, seen)
    await conn.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
    body = zoo.image_json(seen)
    await answer(conn, seen, "200 OK", [DATE, *plain(body)], body)


def _early(status: str, error: dict[str, object], *, linger: bool = False) -> Handler:
    """Answer from the head alone, while the client is still sending its body, and close.

    Closing with the body unread makes the kernel reset the connection. With ``linger`` the
    server does what nginx's lingering close does instead: it shuts its side for writing and
    reads (and drops) what the client still sends, so the answer is not lost to a reset.
    """

    async def respond(zoo: Zoo, conn: Conn, head: Head, seen: Seen) -> None:
        body = json.dumps({"error": error}).encode()
        headers = [DATE, *plain(body), "Connection: close"]
        await answer(conn, seen, status, headers, body)
        if linger:
            conn.writer.write_eof()
            with anyio.move_on_after(5):
                while await conn.reader.read(1 << 16):
                    pass
        await conn.close()

    return api(respond)


async def _error_in_200(zoo: Zoo, conn: Conn, head: Head, seen: Seen) -> None:
    await read_body(conn, head, seen)
    await answer(conn, seen, "200 OK", [DATE, *plain(QUOTA_BODY)], QUOTA_BODY)


def _cdn_error(code: str) -> Handler:
    """The CDN's HTML error page for the first call (the origin did the work), then a 200."""

    async def respond(zoo: Zoo, conn: Conn, head: Head, seen: Seen) -> None:
        await read_body(conn, head, seen)
        if zoo.state.setdefault("cdn_errors", 0) == 0:
            zoo.state["cdn_errors"] = 1
            seen.billed = True
            page = CDN_PAGES[code]
            headers = [
                DATE,
                "Content-Type: text/html",
                f"Content-Length: {len(page)}",
                "Server: cloudflare" if code == "524" else "Server: nginx",
            ]
            await answer(conn, seen, f"{code} {CDN_REASONS[code]}", headers, page)
            return
        body = zoo.image_json(seen)
        await answer(conn, seen, "200 OK", [DATE, *plain(body)], body)

    return api(respond)


#: The trickle: this many pieces, one every ``TRICKLE_GAP`` seconds (4 s in all).
TRICKLE_PIECES = 16
TRICKLE_GAP = 0.25


async def _trickle(zoo: Zoo, conn: Conn, head: Head, seen: Seen) -> None:
    await read_body(conn, head, seen)
    body = zoo.image_json(seen)
    seen.delivered = False  # until the last piece is out
    await answer(conn, seen, "200 OK", [DATE, *plain(body)])
    step = -(-len(body) // TRICKLE_PIECES)
    for at in range(0, len(body), step):
        await anyio.sleep(TRICKLE_GAP)
        await conn.write(body[at : at + step])
    seen.delivered = True


async def _truncated(zoo: Zoo, conn: Conn, head: Head, seen: Seen) -> None:
    """Half the 200's body, then the connection closes (the image was made and billed)."""
    await read_body(conn, head, seen)
    body = zoo.image_json(seen)
    seen.delivered = False
    await answer(conn, seen, "200 OK", [DATE, *plain(body)], body[: len(body) // 2])
    await conn.close()


def _no_answer(*, reset: bool) -> Handler:
    """The whole request read (and billed, as an origin that crashed after the work), then
    the connection closed without a byte of answer: a FIN, or with ``reset`` an RST."""

    async def respond(zoo: Zoo, conn: Conn, head: Head, seen: Seen) -> None:
        await read_body(conn, head, seen)
        seen.billed = True
        await conn.close(abort=reset)

    return api(respond)


def _url_result(files: Handler) -> Handler:
    async def respond(zoo: Zoo, conn: Conn, head: Head, seen: Seen) -> None:
        await read_body(conn, head, seen)
        body = zoo.image_json(seen, url=f"{zoo.origin}/files/{seen.number}.png")
        await answer(conn, seen, "200 OK", [DATE, *plain(body)], body)

    return api(respond, files)


async def _file_403(zoo: Zoo, conn: Conn, head: Head, seen: Seen) -> None:
    await conn.body(head, seen)
    page = b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code></Error>"
    await answer(
        conn,
        seen,
        "403 Forbidden",
        ["Content-Type: application/xml", f"Content-Length: {len(page)}"],
        page,
    )


async def _file_trickle(zoo: Zoo, conn: Conn, head: Head, seen: Seen) -> None:
    """The image of a URL result, in pieces, slower in all than the route's timeout."""
    await conn.body(head, seen)
    image = zoo.image
    await answer(conn, seen, "200 OK", ["Content-Type: image/png", f"Content-Length: {len(image)}"])
    step = -(-len(image) // TRICKLE_PIECES)
    for at in range(0, len(image), step):
        await anyio.sleep(TRICKLE_GAP)
        await conn.write(image[at : at + step])
    number = int(head.path.rsplit("/", 1)[-1].split(".")[0])
    zoo.by_number(number).delivered = True


def _file_redirect(status: str) -> Handler:
    async def files(zoo: Zoo, conn: Conn, head: Head, seen: Seen) -> None:
        if head.path.startswith("/files/moved/"):
            await serve_file(zoo, conn, head, seen)
            return
        await conn.body(head, seen)
        target = head.path.replace("/files/", "/files/moved/", 1)
        await answer(conn, seen, status, [f"Location: {target}", "Content-Length: 0"])

    return files


def _api_redirect(status: str) -> Handler:
    """The API call is redirected once to ``…/moved/…`` on the same server, which answers."""

    async def respond(zoo: Zoo, conn: Conn, head: Head, seen: Seen) -> None:
        await read_body(conn, head, seen)
        if "/moved/" in head.path:
            body = zoo.image_json(seen)
            await answer(conn, seen, "200 OK", [DATE, *plain(body)], body)
            return
        target = zoo.origin + head.path.replace("/v1/", "/v1/moved/", 1)
        await answer(conn, seen, status, [DATE, f"Location: {target}", "Content-Length: 0"])

    return api(respond)


def _too_many(headers: Sequence[str]) -> Handler:
    async def respond(zoo: Zoo, conn: Conn, head: Head, seen: Seen) -> None:
        await read_body(conn, head, seen)
        body = json.dumps(
            {
                "error": {
                    "code": "rate_limit_exceeded",
                    "message": "Rate limit reached",
                    "type": "requests",
                }
            }
        ).encode()
        await answer(conn, seen, "429 Too Many Requests", [DATE, *headers, *plain(body)], body)

    return api(respond)


async def _maintenance(zoo: Zoo, conn: Conn, head: Head, seen: Seen) -> None:
    """A gateway down for maintenance until tomorrow."""
    await read_body(conn, head, seen)
    body = json.dumps(
        {"error": {"code": "service_unavailable", "message": "Down for maintenance"}}
    ).encode()
    headers = [DATE, "Retry-After: 86400", *plain(body)]
    await answer(conn, seen, "503 Service Unavailable", headers, body)


def _limited_then_ok(headers: Sequence[str]) -> Handler:
    """A 429 with ``headers`` for the first call, a 200 after."""
    limited = _too_many(headers)
    ok = image_200(plain)

    async def respond(zoo: Zoo, conn: Conn, head: Head, seen: Seen) -> None:
        first = seen.api and not zoo.state.get("limited")
        if first:
            zoo.state["limited"] = True
        await (limited if first else ok)(zoo, conn, head, seen)

    return respond


async def _corrupt_image(zoo: Zoo, conn: Conn, head: Head, seen: Seen) -> None:
    """A 200 with its usage, whose image is cut off half way (the provider billed it)."""
    await read_body(conn, head, seen)
    half = base64.b64encode(zoo.image[: len(zoo.image) // 2]).decode()
    body = zoo.image_json(seen, b64=half)
    seen.delivered = False
    await answer(conn, seen, "200 OK", [DATE, *plain(body)], body)


def _openai_limits(body: bytes) -> list[str]:
    # What OpenAI sends on every answer: each window's limit, what is left, when it refills.
    return [
        *plain(body),
        "x-ratelimit-limit-requests: 500",
        "x-ratelimit-remaining-requests: 499",
        "x-ratelimit-reset-requests: 120ms",
        "x-ratelimit-limit-tokens: 30000",
        "x-ratelimit-remaining-tokens: 29000",
        "x-ratelimit-reset-tokens: 1m30s",
    ]


def _large_headers(body: bytes) -> list[str]:
    # 60 KB of headers: a CDN's policy headers and a pile of cookies.
    return [*plain(body), *(f"x-cdn-policy-{i:02d}: {'p' * 1000}" for i in range(60))]


def _huge_header(body: bytes) -> list[str]:
    # One 16 KB line: a long Content-Security-Policy, or a fat cookie a CDN sets.
    return [*plain(body), f"Content-Security-Policy: default-src 'self' {'h' * 16_000}"]


def _many_duplicates(body: bytes) -> list[str]:
    return [*plain(body), *(f"Set-Cookie: c{i}=v; Path=/; HttpOnly" for i in range(200))]


CASES: dict[str, Case] = {
    case.name: case
    for case in (
        Case(name="plain", handler=image_200(plain)),
        Case(name="edit_plain", handler=image_200(plain), edit=True),
        Case(
            name="two_content_lengths",
            handler=image_200(lambda b: [*plain(b), f"Content-Length: {len(b)}"]),
        ),
        Case(
            name="content_length_list",
            handler=image_200(lambda b: [JSON, f"Content-Length: {len(b)}, {len(b)}"]),
        ),
        Case(
            name="content_length_and_chunked",
            handler=_with_body(
                lambda b: [JSON, f"Content-Length: {len(b)}", "Transfer-Encoding: chunked"],
                chunked,
            ),
        ),
        Case(name="bare_lf", handler=image_200(plain, eol=b"\n")),
        Case(
            name="obs_fold",
            handler=image_200(lambda b: [*plain(b), "x-note: generated by the", "  image model"]),
        ),
        Case(name="http10", handler=api(_http10)),
        Case(name="eof_body", handler=api(_eof_body)),
        Case(
            name="chunked_trailers",
            handler=_with_body(
                lambda b: [JSON, "Transfer-Encoding: chunked", "Trailer: x-usage-tokens"],
                lambda b: chunked(b, trailers=["x-usage-tokens: 284"]),
            ),
        ),
        Case(
            name="chunk_extensions",
            handler=_with_body(
                lambda b: [JSON, "Transfer-Encoding: chunked"],
                lambda b: chunked(b, extension=";name=value"),
            ),
        ),
        Case(
            name="gzip",
            handler=image_200(
                lambda b: [*plain(b), "Content-Encoding: gzip", "Vary: Accept-Encoding"],
                encode=gzip.compress,
            ),
        ),
        Case(name="continue_100", handler=api(_continue_then_200), edit=True),
        Case(name="early_hints_103", handler=api(_early_hints)),
        Case(
            name="close_after_response",
            handler=image_200(plain, after=_close_quietly),
            racy=True,
        ),
        Case(name="keepalive_race", handler=image_200(plain, after=_close_on_next)),
        Case(
            name="idle_keepalive_close",
            handler=image_200(plain, after=_close_when_idle),
            gap=0.5,
        ),
        Case(name="stray_crlf", handler=image_200(plain, after=_stray_crlf)),
        Case(name="large_headers", handler=image_200(_large_headers)),
        Case(name="huge_header_line", handler=image_200(_huge_header)),
        Case(name="many_duplicate_headers", handler=image_200(_many_duplicates)),
        Case(
            name="json_as_text_plain",
            handler=image_200(
                lambda b: ["Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(b)}"]
            ),
        ),
        Case(name="no_reason_phrase", handler=image_200(plain, status="200")),
        Case(name="other_size", handler=image_200(plain), size="1024x1024"),
        Case(name="b64_mime_lf", handler=image_200(plain, b64=mime_lines("\n"))),
        Case(name="b64_mime_crlf", handler=image_200(plain, b64=mime_lines("\r\n"))),
        *(
            Case(
                name=f"early_401{suffix}",
                handler=_early("401 Unauthorized", UNAUTHORIZED, linger=linger),
                edit=True,
                large=True,
            )
            for suffix, linger in (("", False), ("_linger", True))
        ),
        *(
            Case(
                name=f"early_413{suffix}",
                handler=_early("413 Payload Too Large", TOO_LARGE, linger=linger),
                edit=True,
                large=True,
            )
            for suffix, linger in (("", False), ("_linger", True))
        ),
        Case(name="error_in_200", handler=api(_error_in_200)),
        *(Case(name=f"cdn_{code}", handler=_cdn_error(code)) for code in CDN_PAGES),
        Case(name="trickle", handler=api(_trickle)),
        Case(name="truncated_200", handler=api(_truncated)),
        Case(name="close_after_request", handler=_no_answer(reset=False)),
        Case(name="reset_after_request", handler=_no_answer(reset=True)),
        Case(name="url_result", handler=_url_result(serve_file)),
        Case(name="url_trickle", handler=_url_result(_file_trickle)),
        Case(name="url_403", handler=_url_result(_file_403)),
        Case(name="url_307", handler=_url_result(_file_redirect("307 Temporary Redirect"))),
        Case(name="url_302", handler=_url_result(_file_redirect("302 Found"))),
        Case(name="api_307", handler=_api_redirect("307 Temporary Redirect")),
        Case(name="api_302", handler=_api_redirect("302 Found")),
        Case(name="retry_after_day", handler=_too_many(["Retry-After: 86400"])),
        Case(
            name="ratelimit_reset_1s",
            handler=_limited_then_ok(["x-ratelimit-reset-requests: 1s"]),
        ),
        Case(
            name="ratelimit_reset_20ms",
            handler=_limited_then_ok(["x-ratelimit-reset-requests: 20ms"]),
        ),
        Case(name="unavailable_day", handler=api(_maintenance)),
        Case(name="corrupt_image_with_usage", handler=api(_corrupt_image)),
        Case(name="ratelimit_headers_200", handler=image_200(_openai_limits)),
        Case(
            name="ratelimit_reset_6m",
            handler=_too_many(
                ["x-ratelimit-reset-requests: 6m0s", "x-ratelimit-remaining-requests: 0"]
            ),
        ),
    )
}
