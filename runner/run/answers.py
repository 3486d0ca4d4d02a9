"""What a route's pace learns from an attempt: an answer that came, or a refusal."""

from __future__ import annotations

import anyio

from runner.errors import AttemptError
from runner.models import Job, Outcome, RateLimits, Usage
from runner.run.pace_state import Observation


def job_images(job: Job) -> int:
    """Images ``job`` asks for: what one request of it takes of an images-per-minute limit."""
    try:
        return max(1, int(job.params.get("n", 1)))
    except (TypeError, ValueError):
        return 1


def answered(
    job: Job, limits: RateLimits | None, usage: Usage | None, latency_ms: float | None = None
) -> Observation:
    """What the pace learns from an answer that was not refused (``latency_ms`` after it was
    sent)."""
    tokens = sum(usage.to_json().values()) if usage is not None else None
    now = anyio.current_time()
    return Observation(
        at=now,
        rate_limited=False,
        limits=limits,
        images=job_images(job),
        tokens=tokens or None,
        sent_at=now - latency_ms / 1000 if latency_ms is not None else None,
    )


def refused(job: Job, error: AttemptError) -> Observation:
    """What the pace learns from a failed attempt (a 429 slows it; other failures do not)."""
    return Observation(
        at=anyio.current_time(),
        rate_limited=error.outcome is Outcome.RATE_LIMITED,
        limits=error.rate_limits,
        images=job_images(job),
        retry_after=error.retry_after,
    )
