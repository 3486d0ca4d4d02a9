"""Sending one attempt over HTTP: the request out, the answer's body in, classified.

Exceptions and error answers are turned into :class:`~runner.errors.AttemptError` by
:mod:`runner.http.classify`; nothing httpx-specific escapes this module.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import httpx

from runner.errors import AttemptError
from runner.http.classify import classify_error, gateway_id, request_id_in_text, translated
from runner.http.client import ApiClient
from runner.models import Outcome
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
    #: Bytes reserved from the run's memory budget for this body (released by the caller).
    held: int = 0


async def send(
    client: ApiClient,
    prepared: PreparedRequest,
    client_request_id: str,
    budget: Memory | None = None,
) -> Exchange:
    """Send ``prepared`` and return the decoded 200 body, or raise :class:`AttemptError`.

    With a ``budget``, a large 200 body is only read once memory for it is reserved; the
    reservation travels in :attr:`Exchange.held` and the caller releases it.
    """
    started = time.perf_counter()
    request = client.request(prepared, client_request_id)
    try:
        # Streamed, so that a body cut short is told apart from a request that got no answer:
        # once the status line and headers are in, the provider saw (and may bill) the call,
        # and its request ids are ours to record.
        with translated():
            response = await client.send(request)
    except AttemptError as error:
        error.latency_ms = (time.perf_counter() - started) * 1000
        raise
    provider_id = response.headers.get("x-request-id")
    gateway = gateway_id(response.headers)
    held = 0
    try:
        if budget is not None and response.status_code == 200:
            length = response.headers.get("content-length")
            held = await budget.acquire(budget.cost(int(length) if length else None))
        with translated(response):
            content = await _read_body(response)
    except AttemptError as error:
        if budget is not None:
            await budget.release(held)
        error.seen(
            provider_request_id=provider_id,
            gateway_request_id=gateway,
            latency_ms=(time.perf_counter() - started) * 1000,
        )
        raise
    except BaseException:  # cancelled while waiting for memory or reading: give it all back
        if budget is not None:
            await budget.release(held)
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await response.aclose()
    latency = (time.perf_counter() - started) * 1000
    try:
        body = _decode(response, content, provider_id, gateway, latency)
    except AttemptError:
        if budget is not None:
            await budget.release(held)
        raise
    return Exchange(
        status=200,
        body=body,
        provider_request_id=provider_id,
        gateway_request_id=gateway,
        latency_ms=latency,
        held=held,
    )


async def _read_body(response: httpx.Response) -> bytes:
    """The whole body, held only by the caller.

    ``Response.aread()`` would keep a second reference in the response object, which sits in a
    reference cycle with its stream: each multi-megabyte body then lingers until the garbage
    collector happens to run, and a run of large images balloons.
    """
    if "content-encoding" in response.headers:
        chunks = [chunk async for chunk in response.aiter_bytes()]
    else:  # nothing to decode: the raw stream, without httpx's decoder and chunker per read
        assert isinstance(response.stream, httpx.AsyncByteStream)
        chunks = [chunk async for chunk in response.stream]
    return b"".join(chunks)


def _decode(
    response: httpx.Response,
    content: bytes,
    provider_id: str | None,
    gateway: str | None,
    latency: float,
) -> Any:
    if response.status_code != 200:
        error = classify_error(response.status_code, response.headers, content)
        raise error.seen(
            provider_request_id=provider_id,
            gateway_request_id=gateway or request_id_in_text(error.message),
            latency_ms=latency,
        )
    try:
        return json.loads(content)
    except ValueError as exc:
        error = AttemptError(Outcome.BAD_RESPONSE, f"200 response is not JSON: {exc}", status=200)
        raise error.seen(
            provider_request_id=provider_id,
            gateway_request_id=gateway,
            latency_ms=latency,
        ) from exc
