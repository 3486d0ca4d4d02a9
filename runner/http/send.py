"""Sending one attempt over HTTP: the request out, the answer's body in, classified.

Exceptions and error answers are turned into :class:`~runner.errors.AttemptError` by
:mod:`runner.http.classify`; nothing httpx-specific escapes this module.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from typing import Any, Protocol

import anyio

from runner.errors import AttemptError
from runner.http.classify import (
    FOLLOWED_REDIRECTS,
    MAX_REDIRECTS,
    STOPPING_REDIRECTS,
    classify_error,
    error_in_body,
    gateway_id,
    redirect_error,
    request_id_in_text,
    translated,
)
from runner.http.client import ApiClient
from runner.http.hints import rate_limits
from runner.http.transport import Answer, Outgoing
from runner.models import Outcome, RateLimits
from runner.shapes.base import PreparedRequest


class Memory(Protocol):
    """The run's byte budget for large bodies (``runner.run.memory.ByteBudget``)."""

    def cost(self, content_length: int | None) -> int: ...

    async def acquire(self, amount: int) -> int: ...

    async def release(self, amount: int) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Exchange:
    """A completed HTTP exchange with a 200 JSON body."""

    status: int
    body: Any
    provider_request_id: str | None
    gateway_request_id: str | None
    latency_ms: float
    #: The URL that answered (the endpoint's, or where a 307/308 led).
    url: str = ""
    #: The answer's ``x-ratelimit-*`` headers, parsed.
    rate_limits: RateLimits | None = None
    #: When (``anyio.current_time()``) the attempt must be over: what is left of it bounds the
    #: download of an image returned by URL.
    deadline: float = math.inf
    #: Bytes reserved from the run's memory budget for this body (released by the caller).
    held: int = 0


@dataclass(slots=True)
class _Seen:
    """What the answer has told so far (kept for the error if the deadline cuts it short)."""

    started: float
    #: The request's head was handed to the socket (from then on it may have been seen).
    written: bool = False
    status: int | None = None
    provider_id: str | None = None
    gateway_id: str | None = None

    def mark_written(self) -> None:
        self.written = True

    def stamp(self, error: AttemptError) -> AttemptError:
        if self.status is not None:
            error.sent = True
            error.status = error.status or self.status
        return error.seen(
            provider_request_id=self.provider_id,
            gateway_request_id=self.gateway_id,
            latency_ms=(time.perf_counter() - self.started) * 1000,
        )


async def send(
    client: ApiClient,
    prepared: PreparedRequest,
    client_request_id: str,
    budget: Memory | None = None,
    *,
    deadline: float | None = None,
) -> Exchange:
    """Send ``prepared`` and return the decoded 200 body, or raise :class:`AttemptError`.

    Args:
        client: the route's endpoint.
        prepared: what the shape adapter built.
        client_request_id: our id for the attempt (``X-Client-Request-Id``).
        budget: with one, a large 200 body is only read once memory for it is reserved; the
            reservation travels in :attr:`Exchange.held` and the caller releases it.
        deadline: when (on ``anyio.current_time()``'s clock) the whole exchange, from
            connecting to the last byte of the answer, must be over; by default the client's
            ``deadline_s`` from now. A body trickling in slowly does not extend it; time spent
            waiting for ``budget`` (our own memory, not the server) does.
    """
    seen = _Seen(time.perf_counter())
    if deadline is None:
        deadline = anyio.current_time() + (client.deadline_s or math.inf)
    out = client.outgoing(prepared, client_request_id)
    with anyio.move_on_at(deadline) as scope:
        try:
            return await _exchange(client, out, budget, seen, scope)
        except AttemptError as error:
            seen.stamp(error)
            raise
    assert scope.cancelled_caught
    limit = f" ({client.deadline_s:g} s)" if client.deadline_s else ""
    late = AttemptError(
        Outcome.TIMEOUT,
        f"no whole answer within the route's timeout{limit}",
        sent=seen.written,  # cut off while connecting or queueing for a connection: not sent
    )
    raise seen.stamp(late)


async def _exchange(
    client: ApiClient,
    out: Outgoing,
    budget: Memory | None,
    seen: _Seen,
    deadline: anyio.CancelScope,
) -> Exchange:
    response, out = await _answer(client, out, seen)
    held = 0
    try:
        if budget is not None and response.status_code == 200:
            length = response.headers.get("content-length")
            waiting, due = anyio.current_time(), deadline.deadline
            deadline.deadline = math.inf  # the clock stops while we queue for our own memory
            held = await budget.acquire(budget.cost(int(length) if length else None))
            deadline.deadline = due + anyio.current_time() - waiting
        with translated(response):
            content = await _read_body(response)
        body = _decode(response, content, seen)
    except BaseException:  # failed, or cancelled while waiting for memory or reading
        if budget is not None:
            await budget.release(held)
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await response.aclose()
    return Exchange(
        status=200,
        body=body,
        provider_request_id=seen.provider_id,
        gateway_request_id=seen.gateway_id,
        latency_ms=(time.perf_counter() - seen.started) * 1000,
        url=out.url_text,
        rate_limits=rate_limits(response.headers),
        deadline=deadline.deadline,
        held=held,
    )


async def _answer(client: ApiClient, out: Outgoing, seen: _Seen) -> tuple[Answer, Outgoing]:
    """The answer to ``out``, through at most ``MAX_REDIRECTS`` 307/308 hops, and the request
    that got it.

    Streamed, so that a body cut short is told apart from a request that got no answer: once
    the status line and headers are in, the provider saw (and may bill) the call, and its
    request ids are ours to record.
    """
    for hops in range(MAX_REDIRECTS + 1):
        with translated():
            response = await client.open(out, seen.mark_written)
        seen.status = response.status_code
        seen.provider_id = response.headers.get("x-request-id")
        seen.gateway_id = gateway_id(response.headers)
        if response.status_code not in FOLLOWED_REDIRECTS | STOPPING_REDIRECTS:
            return response, out
        with anyio.CancelScope(shield=True):
            await response.aclose()
        target = _redirected(out, response, hops)
        if target is None:
            raise redirect_error(response.status_code, response.headers, hops + 1)
        out = target
    raise AssertionError("unreachable: the last hop returns or raises")


def _redirected(out: Outgoing, response: Answer, hops: int) -> Outgoing | None:
    """The same request to where a 307/308 points, if that is allowed; else ``None``.

    Allowed: at most ``MAX_REDIRECTS`` hops, to the same host (never from https to http) or to
    https on another host.
    """
    location = response.headers.get("location")
    if response.status_code not in FOLLOWED_REDIRECTS or hops >= MAX_REDIRECTS or not location:
        return None
    url = out.url.join(location)
    same_host = url.host == out.url.host
    if url.scheme not in ("http", "https") or not (same_host or url.scheme == "https"):
        return None
    if out.url.scheme == "https" and url.scheme == "http":
        return None
    dropped = {"host"}
    if (url.scheme, url.host, url.port) != (out.url.scheme, out.url.host, out.url.port):
        # The key is the origin's: another origin never sees it (as httpx's own redirects).
        dropped.add("authorization")
    headers = [(k, v) for k, v in out.headers if k.lower() not in dropped]
    return replace(out, url=url, wire_url=None, url_text=str(url), headers=headers)


async def _read_body(response: Answer) -> bytes:
    """The whole body, held only by the caller.

    ``httpx.Response.aread()`` would keep a second reference in the response object, which
    sits in a reference cycle with its stream: each multi-megabyte body then lingers until the
    garbage collector happens to run, and a run of large images balloons.
    """
    if "content-encoding" in response.headers:  # httpx decodes it
        chunks = [chunk async for chunk in response.decoded().aiter_bytes()]
    else:  # nothing to decode: the raw stream, without httpx's decoder and chunker per read
        chunks = [chunk async for chunk in response.body]
    return b"".join(chunks)


def _decode(response: Answer, content: bytes, seen: _Seen) -> Any:
    """The JSON body of a 200; an error answer (or a 200 carrying an error) raises."""
    if response.status_code != 200:
        error = classify_error(response.status_code, response.headers, content)
        seen.gateway_id = seen.gateway_id or request_id_in_text(error.message)
        raise error
    try:
        body = json.loads(content)
    except ValueError as exc:
        message = f"200 response is not JSON: {exc}"
        raise AttemptError(Outcome.BAD_RESPONSE, message, status=200) from exc
    if error_in_body(body):
        error = classify_error(200, response.headers, content)
        seen.gateway_id = seen.gateway_id or request_id_in_text(error.message)
        raise error
    return body
