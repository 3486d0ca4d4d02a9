"""The adaptive pace of a route: how many requests a minute to send, and why.

:class:`Pace` is a pure controller (no clock, no I/O): the gate feeds it each attempt's
outcome as an :class:`Observation` and asks it for the gap to leave before the next request.

- The configured ``rpm`` is a ceiling, never exceeded.
- ``x-ratelimit-limit-*`` headers (requests, images, tokens) set the pace outright; a 429 while
  pacing from them lowers the share of the limit used, a step at a time.
- Without headers a 429 backs off multiplicatively and the pace probes upward while clean:
  quickly back to just under the rate that was refused, slowly beyond it (AIMD).
- A route whose rate nobody gave starts low and doubles while clean until the first 429 or
  the first headers.
- A request for ``n`` images takes ``n`` of an images-per-minute limit; one reporting ``t``
  tokens takes ``t`` of a tokens-per-minute limit (from the route's running average).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from runner.models import RateLimits

#: Share of a limit the headers gave that the pace uses at first (arrival times jitter).
HEADER_SHARE = 0.99
#: The lowest share a run of 429s can push the header pace down to.
MIN_HEADER_SHARE = 0.85
#: What one 429 takes off the header share.
HEADER_SHARE_STEP = 0.02
#: The pace after a route's first 429 without headers, as a fraction of the pace refused
#: (nothing is known yet of the limit: halve, as TCP does).
FIRST_BACKOFF = 0.5
#: The pace after a later 429 without headers, as a fraction of the pace refused.
BACKOFF = 0.7
#: The same when the refused pace is close to the one refused before: the limit is known to
#: be about there, so the pace steps back less.
BACKOFF_NEAR = 0.9
#: Within this fraction of the pace refused before, a refusal counts as near it.
NEAR = 0.05
#: How close below the refused rate the pace climbs back quickly.
RECOVER_TO = 0.95
#: Quick climb (per clean second), and the slow probe beyond (of the refused rate, per second).
RECOVER_RATE = 0.15
PROBE_RATE = 0.01
#: A route nobody gave a rate starts at this fraction of its ceiling and doubles this often.
START_SHARE = 0.25
DOUBLING_S = 2.0
#: 429s within this many seconds of a backoff belong to the same episode (sent before it).
EPISODE_S = 1.0
#: The slowest pace (requests a minute).
FLOOR_RPM = 1.0


class Reason(StrEnum):
    """Why the pace is what it is (shown on the progress line)."""

    CONFIGURED = "configured"
    PROBING = "probing upward"
    HEADERS = "from headers"
    BACKED_OFF = "backed off after a 429"
    CEILING = "at the ceiling"
    LEARNED = "learned earlier"


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """One attempt's answer as the pace needs it.

    Attributes:
        at: when the answer came (seconds, any monotonic clock).
        rate_limited: the answer was a 429.
        limits: its ``x-ratelimit-*`` headers, parsed, if any.
        images: images the request asked for.
        tokens: tokens the answer reported using, if it did.
    """

    at: float
    rate_limited: bool
    limits: RateLimits | None = None
    images: int = 1
    tokens: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Learned:
    """What a route's pace has learned: kept as route state between runs and workers.

    Attributes:
        rpm: the request pace.
        reason: why.
        requests: the requests-per-minute limit the headers gave.
        images: the images-per-minute limit the headers gave.
        tokens: the tokens-per-minute limit the headers gave.
        refused_rpm: the last pace a 429 without headers refused.
    """

    rpm: float
    reason: Reason
    requests: int | None = None
    images: int | None = None
    tokens: int | None = None
    refused_rpm: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "rpm": self.rpm,
            "reason": self.reason.value,
            **{
                name: getattr(self, name)
                for name in ("requests", "images", "tokens", "refused_rpm")
                if getattr(self, name) is not None
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Learned:
        def number(name: str) -> int | None:
            value = data.get(name)
            return int(value) if value is not None else None

        refused = data.get("refused_rpm")
        return cls(
            rpm=float(data["rpm"]),
            reason=Reason(data.get("reason", Reason.LEARNED)),
            requests=number("requests"),
            images=number("images"),
            tokens=number("tokens"),
            refused_rpm=float(refused) if refused is not None else None,
        )

    @property
    def limit_text(self) -> str:
        """The limits in words (``500 req/min, 5 img/min``), or the pace when none came."""
        parts = [
            f"{value} {unit}/min"
            for value, unit in ((self.requests, "req"), (self.images, "img"), (self.tokens, "tok"))
            if value
        ]
        return ", ".join(parts) or f"~{self.rpm:.0f} req/min ({self.reason})"


class Pace:
    """A route's request pace under a ceiling.

    Args:
        ceiling: the configured requests per minute, never exceeded.
        told: the user gave ``ceiling`` (start there); otherwise start low and probe upward.
        learned: what an earlier run or another worker learned (starts from it).
    """

    def __init__(self, ceiling: float, *, told: bool, learned: Learned | None = None) -> None:
        self.ceiling = ceiling
        self._share = HEADER_SHARE
        self._tokens_avg: float | None = None
        self._backoff_at: float | None = None
        self._last_at: float | None = None
        if learned is not None:
            rpm = min(ceiling, learned.rpm)
            self.learned = replace(learned, rpm=rpm, reason=self._reason_for(rpm, learned.reason))
            self._slow_start = False
        elif told:
            self.learned = Learned(rpm=ceiling, reason=Reason.CONFIGURED)
            self._slow_start = False
        else:
            self.learned = Learned(rpm=max(FLOOR_RPM, ceiling * START_SHARE), reason=Reason.PROBING)
            self._slow_start = True

    @property
    def rpm(self) -> float:
        """Requests a minute the route is paced at now."""
        return self.learned.rpm

    @property
    def reason(self) -> Reason:
        return self.learned.reason

    def interval(self, images: int = 1) -> float:
        """Seconds to leave before a request for ``images`` images."""
        gap = 60.0 / self.rpm
        if self.learned.images:
            gap = max(gap, max(1, images) * 60.0 / (self.learned.images * self._share))
        if self.learned.tokens and self._tokens_avg:
            gap = max(gap, self._tokens_avg * 60.0 / (self.learned.tokens * self._share))
        return gap

    def observe(self, seen: Observation) -> bool:
        """Take one answer into account; ``True`` when the pace changed."""
        before = self.learned
        if seen.tokens:
            self._tokens_avg = _average(self._tokens_avg, seen.tokens)
        if seen.limits is not None and _has_limit(seen.limits):
            self._from_headers(seen)
        elif seen.rate_limited:
            self._back_off(seen.at)
        else:
            self._probe(seen.at)
        self._last_at = seen.at
        return self.learned != before

    def _from_headers(self, seen: Observation) -> None:
        assert seen.limits is not None
        if seen.rate_limited and not self._in_episode(seen.at):
            self._share = max(MIN_HEADER_SHARE, self._share - HEADER_SHARE_STEP)
            self._backoff_at = seen.at
        self._slow_start = False
        limits = seen.limits
        requests = _limit(limits, "requests") or self.learned.requests
        images = _limit(limits, "images") or self.learned.images
        tokens = _limit(limits, "tokens") or self.learned.tokens
        rpm = min(self.ceiling, requests * self._share) if requests else self.ceiling
        reason = Reason.HEADERS if rpm < self.ceiling else Reason.CEILING
        self.learned = Learned(
            rpm=rpm, reason=reason, requests=requests, images=images, tokens=tokens
        )

    def _back_off(self, at: float) -> None:
        if self._in_episode(at):
            return
        self._backoff_at = at
        self._slow_start = False
        rpm, before = self.rpm, self.learned.refused_rpm
        if before is None:
            share, refused = FIRST_BACKOFF, rpm
        elif abs(rpm - before) <= NEAR * before:
            # About where the limit was found before: step back a little, and move the
            # estimate only halfway (a refusal just off it may be arrival times jittering).
            share, refused = BACKOFF_NEAR, (rpm + before) / 2
        else:
            share, refused = BACKOFF, rpm
        self.learned = replace(
            self.learned,
            rpm=max(FLOOR_RPM, rpm * share),
            reason=Reason.BACKED_OFF,
            refused_rpm=refused,
        )

    def _probe(self, at: float) -> None:
        if self.learned.requests is not None or self._last_at is None:
            return
        dt = max(0.0, at - self._last_at)
        rpm, refused = self.rpm, self.learned.refused_rpm
        if self._slow_start:
            rpm *= 2 ** (dt / DOUBLING_S)
        elif refused is not None and rpm < refused * RECOVER_TO:
            rpm = min(refused * RECOVER_TO, rpm * (1 + RECOVER_RATE * dt))
        elif refused is not None and rpm < refused * (1 + NEAR):
            # Near the rate refused before: creep, since that is where the limit is.
            rpm += refused * PROBE_RATE / 2 * dt
        else:
            rpm += (refused or self.ceiling) * PROBE_RATE * dt
        rpm = min(self.ceiling, rpm)
        if rpm != self.rpm:
            reason = self._reason_for(rpm, self.learned.reason)
            self.learned = replace(self.learned, rpm=rpm, reason=reason)

    def _reason_for(self, rpm: float, otherwise: Reason) -> Reason:
        return Reason.CEILING if rpm >= self.ceiling else otherwise

    def _in_episode(self, at: float) -> bool:
        return self._backoff_at is not None and at - self._backoff_at < EPISODE_S


def _has_limit(limits: RateLimits) -> bool:
    return any(_limit(limits, kind) for kind in ("requests", "images", "tokens"))


def _limit(limits: RateLimits, kind: str) -> int | None:
    window = getattr(limits, kind)
    return window.limit if window is not None and window.limit else None


def _average(current: float | None, value: float) -> float:
    return value if current is None else current * 0.9 + value * 0.1
