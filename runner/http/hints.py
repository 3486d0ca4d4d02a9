"""What a server says about waiting: ``Retry-After``, ``retry-after-ms`` and rate-limit headers.

``x-ratelimit-limit-*``, ``x-ratelimit-remaining-*`` and ``x-ratelimit-reset-*`` (for
``requests``, ``tokens`` and ``images``) come as counts and Go durations (``20ms``, ``1s``,
``6m0s``, ``1h2m3.5s``); :class:`runner.models.RateLimits` holds them parsed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

from runner.models import Limit, RateLimits, utcnow

#: The resources a provider reports rate limits for.
KINDS = ("requests", "tokens", "images")
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
#: The longest wait a header is taken at (a year): beyond it a date overflows, and any wait
#: that long stops the route past every job's deadline anyway. Not-a-number is no hint.
MAX_WAIT_S = 365 * 86400.0


def _wait(seconds: float) -> float | None:
    if seconds != seconds:  # NaN
        return None
    return min(max(0.0, seconds), MAX_WAIT_S)


def go_duration(text: str) -> float | None:
    """Seconds in a Go duration (``20ms``, ``6m0s``, ``1h2m3.5s``); a bare number is seconds."""
    text = text.strip()
    try:
        return _wait(float(text))
    except ValueError:
        pass
    pos, total = 0, 0.0
    for match in _GO_DURATION.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    return _wait(total) if pos == len(text) and pos else None


def rate_limits(headers: Mapping[str, str]) -> RateLimits | None:
    """The ``x-ratelimit-*`` headers parsed, or ``None`` when there are none."""
    # One pass over the headers: a lookup by name walks them all, nine times per answer.
    found = {
        name: value
        for name, value in headers.items()
        if name.startswith("x-ratelimit-")  # names come lower-cased
    }
    if not found:
        return None
    kinds: dict[str, Limit] = {}
    for kind in KINDS:
        limit = _count(found.get(f"x-ratelimit-limit-{kind}"))
        remaining = _count(found.get(f"x-ratelimit-remaining-{kind}"))
        reset = found.get(f"x-ratelimit-reset-{kind}")
        reset_s = go_duration(reset) if reset is not None else None
        if limit is not None or remaining is not None or reset_s is not None:
            kinds[kind] = Limit(limit=limit, remaining=remaining, reset_s=reset_s)
    return RateLimits(**kinds) if kinds else None


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Server-directed delay in seconds.

    ``retry-after-ms`` first, then ``Retry-After`` (seconds or an HTTP date), then, when
    neither came, the longest ``x-ratelimit-reset-*``.
    """
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return _wait(float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is not None:
        try:
            return _wait(float(value))
        except ValueError:
            pass
        try:
            return _wait((parsedate_to_datetime(value) - utcnow()).total_seconds())
        except (TypeError, ValueError):
            pass
    limits = rate_limits(headers)
    return limits.reset_s if limits else None


def _count(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
