"""What a failed attempt means: exceptions, statuses and error codes mapped to outcome classes.

Every way an attempt can fail is looked up here, in tables: an httpx exception raised while
sending (:data:`EXCEPTION_MAP`, with whether the request can have left), and a provider's
answer (its error ``code`` and ``type`` in :data:`CODE_MAP` and :data:`TYPE_MAP`, then its HTTP
status in :data:`STATUS_MAP`). :func:`translated` is the one place httpx exceptions become
:class:`~runner.errors.AttemptError`; nothing httpx-specific escapes the wire.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from runner.errors import AttemptError, Translating
from runner.http.hints import rate_limits, retry_after
from runner.http.wire_errors import UnreadableResponse
from runner.models import Outcome


class Answered(Protocol):
    """An answer's status line and headers (an ``httpx.Response``, a transport ``Answer``)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """How a transport exception is classified."""

    outcome: Outcome
    #: False when the exception proves that no byte of the request reached the server.
    sent: bool


#: httpx exception type → classification; the most specific class in an exception's MRO wins.
EXCEPTION_MAP: dict[type[Exception], Failure] = {
    # No connection was made (or none was free), so nothing was sent.
    httpx.ConnectError: Failure(outcome=Outcome.NETWORK, sent=False),
    httpx.ConnectTimeout: Failure(outcome=Outcome.NETWORK, sent=False),
    httpx.PoolTimeout: Failure(outcome=Outcome.NETWORK, sent=False),
    # The proxy could not be reached, or refused to open a tunnel to the origin.
    httpx.ProxyError: Failure(outcome=Outcome.NETWORK, sent=False),
    httpx.UnsupportedProtocol: Failure(outcome=Outcome.INVALID_REQUEST, sent=False),
    # Refused before a byte was written (a header with a line break in it).
    httpx.LocalProtocolError: Failure(outcome=Outcome.INVALID_REQUEST, sent=False),
    # The server answered something no parser reads: it had the whole request and may have
    # done (and billed) the work, so the attempt is recorded as lost, never re-sent by itself.
    UnreadableResponse: Failure(outcome=Outcome.LOST, sent=True),
    # Waiting for the answer (or writing the body) took too long: the server may be working.
    httpx.TimeoutException: Failure(outcome=Outcome.TIMEOUT, sent=True),
    # The connection broke or the answer was garbled after the request was (partly) written.
    httpx.HTTPError: Failure(outcome=Outcome.NETWORK, sent=True),
}

#: Provider error code → outcome, whatever the HTTP status (quota codes often come as 429).
CODE_MAP: dict[str, Outcome] = {
    **dict.fromkeys(
        (
            "insufficient_quota",
            "credit_balance_exhausted",
            "organization_spend_limit_exceeded",
            "project_spend_limit_exceeded",
            "organization_usage_limit_exceeded",
            "insufficient_user_quota",
            "pre_consume_token_quota_failed",
        ),
        Outcome.QUOTA_EXHAUSTED,
    ),
    **dict.fromkeys(
        ("moderation_blocked", "content_policy_violation", "image_content_policy_violation"),
        Outcome.MODERATION_BLOCKED,
    ),
    **dict.fromkeys(("invalid_api_key", "account_deactivated"), Outcome.AUTH),
    # OpenAI's 404, and a gateway's 503 "no available channel for model M under group G":
    # the same request will not do better later, whatever the status says.
    "model_not_found": Outcome.INVALID_REQUEST,
}
#: Provider error type → outcome, where the code alone does not tell.
TYPE_MAP: dict[str, Outcome] = {
    "insufficient_quota": Outcome.QUOTA_EXHAUSTED,
    "image_generation_user_error": Outcome.MODERATION_BLOCKED,
    "authentication_error": Outcome.AUTH,
}
#: HTTP status → outcome, for an answer whose code and type are not in the maps above.
STATUS_MAP: dict[int, Outcome] = {
    401: Outcome.AUTH,
    403: Outcome.AUTH,
    408: Outcome.SERVER_ERROR,
    409: Outcome.SERVER_ERROR,
    429: Outcome.RATE_LIMITED,
    # A gateway or CDN gave up waiting for the origin, which may have done (and billed) the
    # work: a timeout, charged as the route's policy for timeouts says.
    502: Outcome.TIMEOUT,
    504: Outcome.TIMEOUT,
    520: Outcome.TIMEOUT,
    524: Outcome.TIMEOUT,
}
#: Redirects a POST follows (same method, same body); the others stop the route.
FOLLOWED_REDIRECTS = frozenset({307, 308})
STOPPING_REDIRECTS = frozenset({301, 302, 303})
#: Error code of an answer that moved the route's endpoint (301/302/303): stops the route.
REDIRECT = "redirect"
#: Hops of 307/308 followed for one attempt.
MAX_REDIRECTS = 3
#: The error code of a key (or its gateway token group) that cannot use the model asked for.
MODEL_NOT_FOUND = "model_not_found"
#: Answers whose ``Retry-After`` is kept (elsewhere a hint changes nothing).
HINTED = frozenset({Outcome.RATE_LIMITED, Outcome.SERVER_ERROR, Outcome.TIMEOUT})
#: Response headers a gateway puts its own request id in.
GATEWAY_ID_HEADERS = ("x-oneapi-request-id", "x-api-request-id")
_REQUEST_ID_IN_TEXT = re.compile(r"\(request id: ([^)\s]+)\)")


def failure(exc: httpx.HTTPError) -> Failure:
    """The classification of a transport exception (see :data:`EXCEPTION_MAP`)."""
    for cls in type(exc).__mro__:
        if (found := EXCEPTION_MAP.get(cls)) is not None:
            return found
    return EXCEPTION_MAP[httpx.HTTPError]


def status_outcome(status: int, error_type: str | None, code: str | None) -> Outcome:
    """The outcome of a non-200 answer: its code first, then its type, then its status."""
    if code is not None and (outcome := CODE_MAP.get(code)) is not None:
        return outcome
    if error_type is not None and (outcome := TYPE_MAP.get(error_type)) is not None:
        return outcome
    if (outcome := STATUS_MAP.get(status)) is not None:
        return outcome
    if status < 300:  # an error object in a 200 whose code says nothing known
        return Outcome.BAD_RESPONSE
    return Outcome.SERVER_ERROR if status >= 500 else Outcome.INVALID_REQUEST


def translated(response: Answered | None = None) -> _Translated:
    """Raise the :class:`AttemptError` for any httpx exception inside, with the cause chained.

    Args:
        response: the answer whose body was being read, once its status line had come (the
            request then certainly left, and the status still classifies a cut-short body).
    """
    return _Translated(response)


class _Translated(Translating):
    """:func:`translated`'s block (twice a request)."""

    __slots__ = ("_response",)

    def __init__(self, response: Answered | None) -> None:
        self._response = response

    def translate(self, exc: BaseException) -> AttemptError | None:
        if not isinstance(exc, httpx.HTTPError):
            return None
        response = self._response
        return _before(exc) if response is None else _during(exc, response)


def _before(exc: httpx.HTTPError) -> AttemptError:
    found = failure(exc)
    if found.outcome is Outcome.TIMEOUT:
        message = f"no response in time ({type(exc).__name__})"
    else:
        message = f"{type(exc).__name__}: {exc}".rstrip(": ")
    return AttemptError(found.outcome, message, sent=found.sent)


def _during(exc: httpx.HTTPError, response: Answered) -> AttemptError:
    """The answer started but its body never arrived whole (cut off, or too slow)."""
    status = response.status_code
    name = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        message = f"HTTP {status} body not received in time ({name})"
        return AttemptError(Outcome.TIMEOUT, message, status=status)
    if status != 200:
        # The status line says enough to classify (a 429 is still a 429).
        error = classify_error(status, response.headers, b"")
        return AttemptError(
            error.outcome,
            f"{error.message}; body cut short ({name})",
            status=status,
            retry_after=error.retry_after,
        )
    message = f"HTTP 200 body cut short: {name}: {exc}".rstrip(": ")
    return AttemptError(Outcome.BAD_RESPONSE, message, status=status)


def classify_error(status: int, headers: Mapping[str, str], content: bytes) -> AttemptError:
    """Turn an error answer into an outcome class with the provider's type, code, message.

    Also for a 200 whose body is an error object (:func:`error_in_body`), as gateways send.
    """
    error_type, code, message = error_fields(content)
    outcome = status_outcome(status, error_type, code)
    return AttemptError(
        outcome,
        message or f"HTTP {status}",
        status=status,
        error_type=error_type,
        error_code=code,
        retry_after=retry_after(headers) if outcome in HINTED else None,
        rate_limits=rate_limits(headers),
    )


def error_in_body(body: Any) -> bool:
    """Whether a 200's JSON body is an error object (``{"error": {…}}``) and no result."""
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return False
    return not any(body.get(key) for key in ("data", "choices", "output"))


def redirect_error(status: int, headers: Mapping[str, str], hops: int) -> AttemptError:
    """A redirect not followed: 301/302/303, too many hops, or to an insecure other host."""
    location = headers.get("location") or "(no Location)"
    if status in STOPPING_REDIRECTS:
        why = f"HTTP {status}: the endpoint moved to {location}; update the route's base_url"
    elif hops > MAX_REDIRECTS:
        why = f"HTTP {status}: more than {MAX_REDIRECTS} redirects (last to {location})"
    else:
        why = f"HTTP {status} to {location}: only same-host or https redirects are followed"
    return AttemptError(
        Outcome.INVALID_REQUEST, why, status=status, error_code=REDIRECT, stops_route=True
    )


def error_fields(content: bytes) -> tuple[str | None, str | None, str | None]:
    """``(type, code, message)`` of an error body (OpenAI's ``{"error": {…}}`` or plain text)."""
    try:
        body: Any = json.loads(content)
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


def gateway_id(headers: Mapping[str, str]) -> str | None:
    """A gateway's own request id, from the first of :data:`GATEWAY_ID_HEADERS` present."""
    return next((headers[h] for h in GATEWAY_ID_HEADERS if h in headers), None)


def request_id_in_text(message: str | None) -> str | None:
    """The ``(request id: …)`` a gateway appends to error messages."""
    match = _REQUEST_ID_IN_TEXT.search(message or "")
    return match.group(1) if match else None
