"""Sending one attempt over HTTP and classifying what came back.

This is the boundary where httpx's exceptions and providers' error bodies become imagerun's
outcome classes (design.md §5). Nothing httpx-specific escapes this module.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import anyio
import httpx

from runner.errors import AttemptError
from runner.http.client import ApiClient
from runner.models import Outcome, utcnow
from runner.run.memory import ByteBudget
from runner.shapes.base import PreparedRequest

#: Error codes that mean "no money / no quota left", whatever the HTTP status (often 429).
QUOTA_CODES = frozenset(
    {
        "insufficient_quota",
        "credit_balance_exhausted",
        "organization_spend_limit_exceeded",
        "project_spend_limit_exceeded",
        "organization_usage_limit_exceeded",
        "insufficient_user_quota",
        "pre_consume_token_quota_failed",
    }
)
MODERATION_CODES = frozenset(
    {"moderation_blocked", "content_policy_violation", "image_content_policy_violation"}
)
#: The key (or its gateway token group) cannot use the model asked for.
MODEL_NOT_FOUND = "model_not_found"
_REQUEST_ID_IN_TEXT = re.compile(r"\(request id: ([^)\s]+)\)")
GATEWAY_ID_HEADERS = ("x-oneapi-request-id", "x-api-request-id")


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
    budget: ByteBudget | None = None,
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
        response = await client.send(request)
    except httpx.HTTPError as exc:
        latency = (time.perf_counter() - started) * 1000
        error = _transport_error(exc)
        error.latency_ms = latency
        error.sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
        raise error from exc
    provider_id = response.headers.get("x-request-id")
    gateway_id = next(
        (response.headers[h] for h in GATEWAY_ID_HEADERS if h in response.headers), None
    )
    held = 0
    try:
        if budget is not None and response.status_code == 200:
            length = response.headers.get("content-length")
            held = await budget.acquire(budget.cost(int(length) if length else None))
        content = await _read_body(response)
    except httpx.HTTPError as exc:
        if budget is not None:
            await budget.release(held)
        raise _body_error(exc, response).seen(
            provider_request_id=provider_id,
            gateway_request_id=gateway_id,
            latency_ms=(time.perf_counter() - started) * 1000,
        ) from exc
    except BaseException:  # cancelled while waiting for memory or reading: give it all back
        if budget is not None:
            await budget.release(held)
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await response.aclose()
    latency = (time.perf_counter() - started) * 1000
    try:
        body = _decode(response, content, provider_id, gateway_id, latency)
    except AttemptError:
        if budget is not None:
            await budget.release(held)
        raise
    return Exchange(
        status=200,
        body=body,
        provider_request_id=provider_id,
        gateway_request_id=gateway_id,
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
    gateway_id: str | None,
    latency: float,
) -> Any:
    if response.status_code != 200:
        error = classify_error(response.status_code, response.headers, content)
        gateway_id = gateway_id or request_id_in_text(error.message)
        raise error.seen(
            provider_request_id=provider_id,
            gateway_request_id=gateway_id,
            latency_ms=latency,
        )
    try:
        return json.loads(content)
    except ValueError as exc:
        error = AttemptError(Outcome.BAD_RESPONSE, f"200 response is not JSON: {exc}", status=200)
        raise error.seen(
            provider_request_id=provider_id,
            gateway_request_id=gateway_id,
            latency_ms=latency,
        ) from exc


def _transport_error(exc: httpx.HTTPError) -> AttemptError:
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return AttemptError(Outcome.TIMEOUT, f"no response in time ({type(exc).__name__})")
    return AttemptError(Outcome.NETWORK, f"{type(exc).__name__}: {exc}".rstrip(": "))


def _body_error(exc: httpx.HTTPError, response: httpx.Response) -> AttemptError:
    """The answer started but its body never arrived whole (cut off, or too slow)."""
    status = response.status_code
    if isinstance(exc, httpx.TimeoutException):
        return AttemptError(
            Outcome.TIMEOUT,
            f"HTTP {status} body not received in time ({type(exc).__name__})",
            status=status,
        )
    if status != 200:
        # The status line says enough to classify (a 429 is still a 429).
        error = classify_error(status, response.headers, b"")
        return AttemptError(
            error.outcome,
            f"{error.message}; body cut short ({type(exc).__name__})",
            status=status,
            retry_after=error.retry_after,
        )
    return AttemptError(
        Outcome.BAD_RESPONSE,
        f"HTTP 200 body cut short: {type(exc).__name__}: {exc}".rstrip(": "),
        status=status,
    )


def classify_error(status: int, headers: httpx.Headers, content: bytes) -> AttemptError:
    """Turn a non-200 response into an outcome class with the provider's type, code, message."""
    error_type, code, message = _error_fields(content)
    message = message or f"HTTP {status}"
    hint = retry_after(headers)
    kwargs: dict[str, Any] = {"status": status, "error_type": error_type, "error_code": code}
    if code in QUOTA_CODES or error_type in QUOTA_CODES:
        return AttemptError(Outcome.QUOTA_EXHAUSTED, message, **kwargs)
    if code in MODERATION_CODES or error_type == "image_generation_user_error":
        return AttemptError(Outcome.MODERATION_BLOCKED, message, **kwargs)
    if code == MODEL_NOT_FOUND:
        # OpenAI's 404, and a gateway's 503 "no available channel for model M under group G":
        # the same request will not do better later, whatever the status says.
        return AttemptError(Outcome.INVALID_REQUEST, message, **kwargs)
    if status == 429:
        return AttemptError(Outcome.RATE_LIMITED, message, retry_after=hint, **kwargs)
    if status in (401, 403):
        return AttemptError(Outcome.AUTH, message, **kwargs)
    if status in (408, 409) or status >= 500:
        return AttemptError(Outcome.SERVER_ERROR, message, retry_after=hint, **kwargs)
    return AttemptError(Outcome.INVALID_REQUEST, message, **kwargs)


def _error_fields(content: bytes) -> tuple[str | None, str | None, str | None]:
    try:
        body = json.loads(content)
    except ValueError:
        text = content[:300].decode("utf-8", "replace").strip()
        return None, None, text or None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        message = body.get("message") if isinstance(body, dict) else None
        return None, None, str(message) if message else None
    code = error.get("code")
    return (
        str(error["type"]) if error.get("type") else None,
        str(code) if code not in (None, "") else None,
        str(error["message"]) if error.get("message") else None,
    )


def retry_after(headers: httpx.Headers) -> float | None:
    """Server-directed delay in seconds: ``retry-after-ms`` first, then ``Retry-After``."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - utcnow()).total_seconds())
    except (TypeError, ValueError):
        return None


def request_id_in_text(message: str | None) -> str | None:
    """The ``(request id: …)`` a gateway appends to error messages."""
    match = _REQUEST_ID_IN_TEXT.search(message or "")
    return match.group(1) if match else None
