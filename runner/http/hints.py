"""Server-directed waits: ``Retry-After`` and ``retry-after-ms``."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

import httpx

from runner.models import utcnow


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
