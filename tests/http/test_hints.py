"""Reading what servers say about waiting: Go durations, rate-limit headers, Retry-After."""

from __future__ import annotations

from datetime import timedelta
from email.utils import format_datetime

import httpx
import pytest

from runner.http.hints import go_duration, rate_limits, retry_after
from runner.models import utcnow


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("20ms", 0.02),
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("1h2m3.5s", 3723.5),
        ("1.5", 1.5),
        ("250us", 0.00025),
        ("0s", 0.0),
    ],
)
def test_go_durations_are_read_as_seconds(text: str, seconds: float) -> None:
    assert go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "6m0", "1x", "m6", "1s 2s"])
def test_what_is_not_a_go_duration_is_none(text: str) -> None:
    assert go_duration(text) is None


def test_a_retry_after_date_in_the_future_is_the_seconds_until_it() -> None:
    when = format_datetime(utcnow() + timedelta(seconds=120), usegmt=True)
    assert retry_after(httpx.Headers({"retry-after": when})) == pytest.approx(120, abs=2)


def test_a_reset_is_honoured_only_when_no_retry_after_came() -> None:
    reset = {"x-ratelimit-reset-requests": "6m0s"}
    assert retry_after(httpx.Headers(reset)) == 360.0
    assert retry_after(httpx.Headers({**reset, "retry-after": "3"})) == 3.0
    assert retry_after(httpx.Headers({**reset, "retry-after-ms": "20"})) == pytest.approx(0.02)


def test_rate_limits_are_none_without_the_headers_and_skip_garbage() -> None:
    assert rate_limits(httpx.Headers({"content-type": "application/json"})) is None
    parsed = rate_limits(
        httpx.Headers({"x-ratelimit-limit-tokens": "lots", "x-ratelimit-remaining-tokens": "10"})
    )
    assert parsed is not None
    assert parsed.tokens is not None
    assert (parsed.tokens.limit, parsed.tokens.remaining, parsed.tokens.reset_s) == (None, 10, None)
    assert parsed.reset_s is None


def test_the_wait_is_the_reset_of_the_window_that_ran_out() -> None:
    """OpenAI sends every window on every answer; a token window's reset is a full refill."""
    headers = {
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-remaining-tokens": "14000",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    assert retry_after(httpx.Headers(headers)) == 1.0
    # No window says it ran out: the longest reset, to be safe.
    headers["x-ratelimit-remaining-requests"] = "3"
    assert retry_after(httpx.Headers(headers)) == 360.0


@pytest.mark.parametrize(
    "headers",
    [{"retry-after": "1e400"}, {"x-ratelimit-reset-requests": "99999999999h"}],
    ids=["retry-after-1e400", "reset-1e11h"],
)
def test_a_wait_beyond_any_clock_is_capped_at_a_year(headers: dict[str, str]) -> None:
    assert retry_after(httpx.Headers(headers)) == 365 * 86400.0
