"""Per-key rate limits enforced the way providers do, in four shapes.

Every shape enforces ``limit`` per minute; they differ in how they measure it:

- ``bucket`` (the default): a token bucket of ``burst`` tokens (default a second's worth,
  ``max(1, ceil(limit / 60))``) refilled continuously at ``limit / 60`` per second. OpenAI
  documents that 60 requests/min may be enforced as 1 per second.
- ``strict``: one request per ``60 / limit`` seconds (GCRA); ``burst`` > 1 lets that many
  arrive back to back.
- ``window``: at most ``limit * window / 60`` requests in each fixed window of ``window``
  seconds (aligned to the clock).
- ``sliding``: at most ``limit * window / 60`` requests in any ``window`` seconds (a log).

A request for ``n`` images costs ``n`` against an images limit.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Literal, Protocol

Metric = Literal["requests", "images"]
LimiterShape = Literal["strict", "window", "bucket", "sliding"]
SHAPES: tuple[LimiterShape, ...] = ("strict", "window", "bucket", "sliding")


@dataclass(frozen=True, slots=True, kw_only=True)
class View:
    """One limit's state as ``x-ratelimit-{limit,remaining,reset}-<metric>`` report it."""

    metric: Metric
    limit: int
    remaining: int
    reset_s: float


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
        views: every limit's state (what the rate-limit headers report), requests first.
    """

    allowed: bool
    metric: Metric
    limit: int
    remaining: int
    reset_s: float
    retry_after_s: float
    views: tuple[View, ...] = ()


class Limit(Protocol):
    """One limit of one key; ``now`` is the limiter's clock."""

    per_minute: int

    def wait_for(self, cost: int, now: float) -> float:
        """Seconds until ``cost`` would be admitted (0 if it would be now)."""

    def take(self, cost: int) -> None:
        """Consume ``cost`` (after :meth:`wait_for` said 0, at the same ``now``)."""

    def remaining(self) -> int:
        """What is left of the limit, in a minute-view."""

    def reset_s(self) -> float:
        """Seconds until the limit is whole again."""


class TokenBucket:
    """A bucket of ``burst`` tokens (default ``max(1, ceil(per_minute / 60))``) refilled at
    ``per_minute / 60`` per second."""

    def __init__(self, per_minute: int, now: float, burst: int | None = None) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.capacity = burst or max(1, math.ceil(per_minute / 60))
        self._tokens = float(self.capacity)
        self._stamp = now

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._stamp)
        self._tokens = min(float(self.capacity), self._tokens + elapsed * self.rate)
        self._stamp = now

    def wait_for(self, cost: int, now: float) -> float:
        self._refill(now)
        need = min(cost, self.capacity) - self._tokens
        return 0.0 if need <= 1e-9 else need / self.rate

    def take(self, cost: int) -> None:
        self._tokens -= min(cost, self.capacity)

    def remaining(self) -> int:
        """Requests left in a minute-view: the limit minus the tokens the bucket is missing."""
        return max(0, self.per_minute - math.ceil(self.capacity - self._tokens - 1e-9))

    def reset_s(self) -> float:
        """Seconds until the bucket is full."""
        return max(0.0, (self.capacity - self._tokens) / self.rate)


class Strict:
    """One request per ``60 / per_minute`` seconds (GCRA with ``burst - 1`` intervals of slack)."""

    def __init__(self, per_minute: int, now: float, burst: int | None = None) -> None:
        self.per_minute = per_minute
        self.interval = 60.0 / per_minute
        self.tolerance = (max(1, burst or 1) - 1) * self.interval
        self._tat = now
        self._now = now

    def wait_for(self, cost: int, now: float) -> float:
        self._now = now
        early = max(self._tat, now) + (cost - 1) * self.interval - now - self.tolerance
        return max(0.0, early) if early > 1e-9 else 0.0

    def take(self, cost: int) -> None:
        self._tat = max(self._tat, self._now) + cost * self.interval

    def remaining(self) -> int:
        owed = max(0.0, self._tat - self._now)
        return max(0, self.per_minute - math.ceil(owed / self.interval - 1e-9))

    def reset_s(self) -> float:
        return max(0.0, self._tat - self._now)


class Window:
    """At most ``per_minute * window / 60`` (at least 1) in each fixed ``window`` seconds."""

    def __init__(self, per_minute: int, now: float, window: float = 1.0) -> None:
        self.per_minute = per_minute
        self.window = window
        self.quota = max(1, round(per_minute * window / 60))
        self._start = math.floor(now / window) * window
        self._used = 0
        self._now = now

    def _roll(self, now: float) -> None:
        self._now = now
        start = math.floor(now / self.window) * self.window
        if start > self._start:
            self._start, self._used = start, 0

    def wait_for(self, cost: int, now: float) -> float:
        self._roll(now)
        if self._used + min(cost, self.quota) <= self.quota:
            return 0.0
        return max(1e-3, self._start + self.window - now)

    def take(self, cost: int) -> None:
        self._used += min(cost, self.quota)

    def remaining(self) -> int:
        return max(0, round((self.quota - self._used) * self.per_minute / self.quota))

    def reset_s(self) -> float:
        return max(0.0, self._start + self.window - self._now) if self._used else 0.0


class Sliding:
    """At most ``per_minute * window / 60`` (at least 1) in any ``window`` seconds."""

    def __init__(self, per_minute: int, now: float, window: float = 1.0) -> None:
        self.per_minute = per_minute
        self.window = window
        self.quota = max(1, round(per_minute * window / 60))
        self._log: deque[tuple[float, int]] = deque()
        self._used = 0
        self._now = now

    def _expire(self, now: float) -> None:
        self._now = now
        while self._log and self._log[0][0] <= now - self.window:
            self._used -= self._log.popleft()[1]

    def wait_for(self, cost: int, now: float) -> float:
        self._expire(now)
        excess = self._used + min(cost, self.quota) - self.quota
        if excess <= 0:
            return 0.0
        freed = 0
        for stamp, spent in self._log:
            freed += spent
            if freed >= excess:
                return max(1e-3, stamp + self.window - now)
        return self.window

    def take(self, cost: int) -> None:
        spent = min(cost, self.quota)
        self._log.append((self._now, spent))
        self._used += spent

    def remaining(self) -> int:
        return max(0, round((self.quota - self._used) * self.per_minute / self.quota))

    def reset_s(self) -> float:
        return max(0.0, self._log[-1][0] + self.window - self._now) if self._log else 0.0


def make_limit(
    shape: LimiterShape, per_minute: int, now: float, *, burst: int | None, window: float
) -> Limit:
    """A limit of ``shape`` (``burst`` applies to ``bucket`` and ``strict``, ``window`` to
    ``window`` and ``sliding``)."""
    if shape == "strict":
        return Strict(per_minute, now, burst)
    if shape == "window":
        return Window(per_minute, now, window)
    if shape == "sliding":
        return Sliding(per_minute, now, window)
    return TokenBucket(per_minute, now, burst)


class RateLimiter:
    """Request and image limits per API key.

    Args:
        rpm: requests per minute, or ``None`` for no request limit.
        ipm: images per minute, or ``None`` for no image limit.
        clock: monotonic seconds (injected so tests can step time instead of sleeping).
        shape: how each limit is measured (see the module docstring).
        burst: requests a ``bucket`` or ``strict`` limit lets arrive back to back.
        window: seconds of a ``window`` or ``sliding`` limit.
    """

    def __init__(
        self,
        rpm: int | None,
        ipm: int | None,
        clock: Callable[[], float],
        *,
        shape: LimiterShape = "bucket",
        burst: int | None = None,
        window: float = 1.0,
    ) -> None:
        self._limits: dict[Metric, int] = {}
        if rpm is not None:
            self._limits["requests"] = rpm
        if ipm is not None:
            self._limits["images"] = ipm
        self._clock = clock
        self._shape: LimiterShape = shape
        self._burst = burst
        self._window = window
        self._buckets: dict[tuple[Hashable, Metric], Limit] = {}

    def _bucket(self, key: Hashable, metric: Metric, now: float) -> Limit:
        bucket = self._buckets.get((key, metric))
        if bucket is None:
            bucket = self._buckets[key, metric] = make_limit(
                self._shape, self._limits[metric], now, burst=self._burst, window=self._window
            )
        return bucket

    def admit(self, key: Hashable, images: int, at: float | None = None) -> Admission | None:
        """Admit one request of ``images`` images for ``key``; ``None`` when nothing is limited.

        ``at`` is when the request arrived (default: now), since a limiter in front of a
        server counts arrivals. Every limit is checked before any is drawn from, so a refusal
        costs nothing.
        """
        if not self._limits:
            return None
        now = self._clock() if at is None else at
        costs: dict[Metric, int] = {"requests": 1, "images": max(1, images)}
        buckets = {m: self._bucket(key, m, now) for m in self._limits}
        waits = {m: b.wait_for(costs[m], now) for m, b in buckets.items()}
        worst: Metric = max(waits, key=lambda m: waits[m])
        allowed = waits[worst] <= 0
        if allowed:
            for metric, bucket in buckets.items():
                bucket.take(costs[metric])
            worst = "requests" if "requests" in buckets else "images"
        views = tuple(
            View(metric=m, limit=b.per_minute, remaining=b.remaining(), reset_s=b.reset_s())
            for m, b in buckets.items()
        )
        shown = next(v for v in views if v.metric == worst)
        return Admission(
            allowed=allowed,
            metric=worst,
            limit=shown.limit,
            remaining=shown.remaining,
            reset_s=shown.reset_s,
            retry_after_s=0.0 if allowed else waits[worst],
            views=views,
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
