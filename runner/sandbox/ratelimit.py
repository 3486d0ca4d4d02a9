"""Per-key rate limits enforced the way providers do: per minute, quantized to short intervals.

OpenAI documents that 60 requests/min may be enforced as 1 per second, so a
client bursting a minute's quota at once is refused. Each limit is a token bucket holding
``max(1, ceil(limit / 60))`` tokens, refilled continuously at ``limit / 60`` per second.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Literal

Metric = Literal["requests", "images"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Admission:
    """The limiter's answer for one request.

    Attributes:
        allowed: whether the request may proceed.
        metric: the limit that decided (the refusing one, or ``requests`` when allowed).
        limit: that limit per minute.
        remaining: requests left in the minute-view of the bucket (``x-ratelimit-remaining``).
        reset_s: seconds until the bucket is full again (``x-ratelimit-reset``).
        retry_after_s: seconds until the refused request would be admitted (0 when allowed).
    """

    allowed: bool
    metric: Metric
    limit: int
    remaining: int
    reset_s: float
    retry_after_s: float


class TokenBucket:
    """A bucket of ``max(1, ceil(per_minute / 60))`` tokens refilled at ``per_minute / 60``/s."""

    def __init__(self, per_minute: int, now: float) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.capacity = max(1, math.ceil(per_minute / 60))
        self._tokens = float(self.capacity)
        self._stamp = now

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._stamp)
        self._tokens = min(float(self.capacity), self._tokens + elapsed * self.rate)
        self._stamp = now

    def wait_for(self, cost: int, now: float) -> float:
        """Seconds until ``cost`` tokens are available (0 if they are now)."""
        self._refill(now)
        need = min(cost, self.capacity) - self._tokens
        return 0.0 if need <= 1e-9 else need / self.rate

    def take(self, cost: int) -> None:
        """Consume ``cost`` tokens (after :meth:`wait_for` said 0)."""
        self._tokens -= min(cost, self.capacity)

    def remaining(self) -> int:
        """Requests left in a minute-view: the limit minus the tokens the bucket is missing."""
        return max(0, self.per_minute - math.ceil(self.capacity - self._tokens - 1e-9))

    def reset_s(self) -> float:
        """Seconds until the bucket is full."""
        return max(0.0, (self.capacity - self._tokens) / self.rate)


class RateLimiter:
    """Request and image buckets per API key.

    Args:
        rpm: requests per minute, or ``None`` for no request limit.
        ipm: images per minute, or ``None`` for no image limit.
        clock: monotonic seconds (injected so tests can step time instead of sleeping).
    """

    def __init__(self, rpm: int | None, ipm: int | None, clock: Callable[[], float]) -> None:
        self._limits: dict[Metric, int] = {}
        if rpm is not None:
            self._limits["requests"] = rpm
        if ipm is not None:
            self._limits["images"] = ipm
        self._clock = clock
        self._buckets: dict[tuple[Hashable, Metric], TokenBucket] = {}

    def _bucket(self, key: Hashable, metric: Metric, now: float) -> TokenBucket:
        bucket = self._buckets.get((key, metric))
        if bucket is None:
            bucket = self._buckets[key, metric] = TokenBucket(self._limits[metric], now)
        return bucket

    def admit(self, key: Hashable, images: int) -> Admission | None:
        """Admit one request of ``images`` images for ``key``; ``None`` when nothing is limited.

        Both buckets are checked before either is drawn from, so a refusal costs nothing.
        """
        if not self._limits:
            return None
        now = self._clock()
        costs: dict[Metric, int] = {"requests": 1, "images": max(1, images)}
        buckets = {m: self._bucket(key, m, now) for m in self._limits}
        waits = {m: b.wait_for(costs[m], now) for m, b in buckets.items()}
        worst: Metric = max(waits, key=lambda m: waits[m])
        if waits[worst] > 0:
            bucket = buckets[worst]
            return Admission(
                allowed=False,
                metric=worst,
                limit=bucket.per_minute,
                remaining=bucket.remaining(),
                reset_s=bucket.reset_s(),
                retry_after_s=waits[worst],
            )
        for metric, bucket in buckets.items():
            bucket.take(costs[metric])
        shown: Metric = "requests" if "requests" in buckets else "images"
        bucket = buckets[shown]
        return Admission(
            allowed=True,
            metric=shown,
            limit=bucket.per_minute,
            remaining=bucket.remaining(),
            reset_s=bucket.reset_s(),
            retry_after_s=0.0,
        )


def go_duration(seconds: float) -> str:
    """A Go ``time.Duration`` string as OpenAI's reset headers use: ``17ms``, ``1s``, ``6m0s``."""
    millis = round(seconds * 1000)
    if millis < 1000:
        return f"{millis}ms" if millis else "0s"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"
