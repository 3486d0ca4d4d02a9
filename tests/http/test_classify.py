"""Classification of failed attempts and provider answers into outcome classes."""

from __future__ import annotations

import json

import httpx
import pytest

from runner.errors import AttemptError
from runner.http.classify import classify_error, failure, request_id_in_text, translated
from runner.http.hints import retry_after
from runner.http.wire_errors import UnreadableResponse
from runner.models import Outcome


def _error(status: int, type_: str | None, code: str | None, message: str = "x") -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": type_, "param": None, "code": code}}
    ).encode()


@pytest.mark.parametrize(
    ("status", "type_", "code", "outcome"),
    [
        (400, "invalid_request_error", "invalid_value", Outcome.INVALID_REQUEST),
        (400, "image_generation_user_error", "moderation_blocked", Outcome.MODERATION_BLOCKED),
        (400, "shell_api_error", "moderation_blocked", Outcome.MODERATION_BLOCKED),
        (401, "invalid_request_error", "invalid_api_key", Outcome.AUTH),
        (403, "new_api_error", "insufficient_user_quota", Outcome.QUOTA_EXHAUSTED),
        (429, "requests", "rate_limit_exceeded", Outcome.RATE_LIMITED),
        (429, "insufficient_quota", "insufficient_quota", Outcome.QUOTA_EXHAUSTED),
        (429, "shell_api_error", "insufficient_user_quota", Outcome.QUOTA_EXHAUSTED),
        (500, "server_error", None, Outcome.SERVER_ERROR),
        (503, "service_unavailable_error", "server_is_overloaded", Outcome.SERVER_ERROR),
        (404, "invalid_request_error", "model_not_found", Outcome.INVALID_REQUEST),
        # new-api: "No available channel for model M under group G": retrying will not help.
        (503, "new_api_error", "model_not_found", Outcome.INVALID_REQUEST),
    ],
)
def test_error_bodies_map_to_outcome_classes(
    status: int, type_: str, code: str | None, outcome: Outcome
) -> None:
    error = classify_error(status, httpx.Headers(), _error(status, type_, code))
    assert error.outcome is outcome
    assert error.status == status


def test_a_429_that_means_quota_is_not_a_rate_limit() -> None:
    """Retrying an empty account would burn through every job: it must stop the route."""
    error = classify_error(
        429, httpx.Headers({"retry-after": "20"}), _error(429, "x", "insufficient_quota")
    )
    assert error.outcome is Outcome.QUOTA_EXHAUSTED
    assert error.outcome.stops_route


def test_a_502_with_an_html_body_is_a_retryable_timeout() -> None:
    """A gateway in front of the origin gave up: the origin may have done (and billed) it."""
    error = classify_error(502, httpx.Headers(), b"<html><body>Bad Gateway</body></html>")
    assert error.outcome is Outcome.TIMEOUT
    assert error.outcome.retryable
    assert "Bad Gateway" in error.message


def test_a_503_with_an_html_body_is_a_retryable_server_error() -> None:
    error = classify_error(503, httpx.Headers(), b"<html><body>Unavailable</body></html>")
    assert error.outcome is Outcome.SERVER_ERROR
    assert error.outcome.retryable
    assert "Unavailable" in error.message


def test_retry_after_ms_wins_over_retry_after() -> None:
    assert retry_after(httpx.Headers({"retry-after-ms": "1500", "retry-after": "9"})) == 1.5
    assert retry_after(httpx.Headers({"retry-after": "3"})) == 3.0
    assert retry_after(httpx.Headers({})) is None


def test_retry_after_as_an_http_date() -> None:
    value = retry_after(httpx.Headers({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}))
    assert value == 0.0  # in the past: retry now


def test_gateway_request_id_is_read_from_the_error_text() -> None:
    message = "Upstream busy (request id: 20261121101010123456789abcdef0ABCDEFGH)"
    assert request_id_in_text(message) == "20261121101010123456789abcdef0ABCDEFGH"
    assert request_id_in_text("no id here") is None


@pytest.mark.parametrize(
    ("exc", "outcome", "sent"),
    [
        (httpx.ConnectError("refused"), Outcome.NETWORK, False),
        (httpx.ConnectTimeout("slow"), Outcome.NETWORK, False),
        (httpx.PoolTimeout("busy"), Outcome.NETWORK, False),
        (httpx.ProxyError("407 from the proxy"), Outcome.NETWORK, False),
        (httpx.UnsupportedProtocol("ftp"), Outcome.INVALID_REQUEST, False),
        (httpx.LocalProtocolError("bad header"), Outcome.INVALID_REQUEST, False),
        (httpx.ReadTimeout("slow"), Outcome.TIMEOUT, True),
        (httpx.WriteTimeout("slow"), Outcome.TIMEOUT, True),
        (httpx.RemoteProtocolError("disconnected"), Outcome.NETWORK, True),
        (httpx.ReadError("reset"), Outcome.NETWORK, True),
        (httpx.WriteError("broken pipe"), Outcome.NETWORK, True),
        (UnreadableResponse("malformed answer"), Outcome.LOST, True),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_each_transport_exception_has_one_outcome_and_says_whether_it_left(
    exc: httpx.HTTPError, outcome: Outcome, sent: bool
) -> None:
    """Only an exception that proves nothing was written may mark an attempt as not sent."""
    with pytest.raises(AttemptError) as raised, translated():
        raise exc
    assert (raised.value.outcome, raised.value.sent) == (outcome, sent)
    assert raised.value.__cause__ is exc
    assert failure(exc).outcome is outcome


def test_an_error_while_reading_a_body_is_classified_by_its_status() -> None:
    request = httpx.Request("POST", "http://x/")
    limited = httpx.Response(429, headers={"retry-after": "7"}, request=request)
    with pytest.raises(AttemptError) as raised, translated(limited):
        raise httpx.ReadError("cut")
    assert (raised.value.outcome, raised.value.status, raised.value.retry_after) == (
        Outcome.RATE_LIMITED,
        429,
        7.0,
    )
    ok = httpx.Response(200, request=request)
    with pytest.raises(AttemptError) as cut, translated(ok):
        raise httpx.ReadError("cut")
    assert (cut.value.outcome, cut.value.status, cut.value.sent) == (
        Outcome.BAD_RESPONSE,
        200,
        True,
    )
