"""Response headers per profile: request ids, processing time, rate-limit state, retry hints."""

from __future__ import annotations

import math

from runner.sandbox.config import Profile
from runner.sandbox.exchange import Exchange
from runner.sandbox.ratelimit import go_duration

#: What ``X-New-Api-Version`` says (new-api sets it on every response).
NEW_API_VERSION = "v0.9.0-sandbox"


def _rate_headers(ex: Exchange) -> dict[str, str]:
    if ex.admission is None or not ex.limit_headers:
        return {}
    headers: dict[str, str] = {}
    for view in ex.admission.views:
        headers[f"x-ratelimit-limit-{view.metric}"] = str(view.limit)
        headers[f"x-ratelimit-remaining-{view.metric}"] = str(view.remaining)
        headers[f"x-ratelimit-reset-{view.metric}"] = go_duration(view.reset_s)
    return headers


def base_headers(ex: Exchange, elapsed_s: float) -> dict[str, str]:
    """Headers every response of ``ex``'s profile carries."""
    if ex.profile is Profile.OPENAI:
        return {
            "x-request-id": ex.request_id,
            "openai-processing-ms": str(round(elapsed_s * 1000)),
            "openai-version": "2020-10-01",
            "openai-organization": "org-sandbox",
            **_rate_headers(ex),
        }
    return {"X-Oneapi-Request-Id": ex.request_id, "X-New-Api-Version": NEW_API_VERSION}


def success_headers(ex: Exchange, elapsed_s: float, *, relayed: bool) -> dict[str, str]:
    """Headers of a 200; ``relayed`` adds the upstream OpenAI headers new-api copies through."""
    headers = base_headers(ex, elapsed_s)
    if relayed:
        # new-api copies every upstream header of a successful response.
        headers |= {"x-request-id": ex.upstream_id, "openai-version": "2020-10-01"}
    return headers


def retry_headers(profile: Profile, retry_after_s: float) -> dict[str, str]:
    """``Retry-After`` (whole seconds, at least 1) and, on OpenAI, ``retry-after-ms``."""
    headers = {"Retry-After": str(max(1, math.ceil(retry_after_s)))}
    if profile is Profile.OPENAI:
        headers["retry-after-ms"] = str(max(1, math.ceil(retry_after_s * 1000)))
    return headers
