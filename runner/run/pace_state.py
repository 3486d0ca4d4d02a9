"""What a route's pace sees and what it learns: an attempt's answer as an :class:`Observation`,
the pace and the limits the headers gave as :class:`Learned` (saved as route state between
runs and workers), and the :class:`Reason` shown for it. Data only: the controller that turns
one into the other is :mod:`runner.run.pacing`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from runner.models import RateLimits


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
        sent_at: when the request was sent (same clock; ``None``: when it was answered).
        retry_after: the wait a refusal asked for (seconds), if it said.
        booked_at: when the request's slot was taken, at the pace of that moment (same clock;
            ``None``: not known).
        spaced_s: how far after the slot before it that slot kept the request (seconds: the
            interval and the allowance for late arrivals; ``None``: not known).
    """

    at: float
    rate_limited: bool
    limits: RateLimits | None = None
    images: int = 1
    tokens: int | None = None
    sent_at: float | None = None
    retry_after: float | None = None
    booked_at: float | None = None
    spaced_s: float | None = None

    @property
    def latency(self) -> float:
        return self.at - self.sent_at if self.sent_at is not None else 0.0


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
        backoff: names the backoff that set the pace last (``None``: none did). Workers that
            share a route take up each backoff once, not every slower pace another saved.
        spacing_s: how much further apart than an interval requests are kept: what the
            limiter's refusals of requests that arrived a hair early asked to wait, summed.
        recover_rpm: where the pace climbs back quickly to after the last backoff (under the
            rate refused, and under what the limiter let through).
        found_near: refusals in a row near the rate refused before (the limit found where
            it was): the pace probes past it half as fast for each.
    """

    rpm: float
    reason: Reason
    requests: int | None = None
    images: int | None = None
    tokens: int | None = None
    refused_rpm: float | None = None
    backoff: str | None = None
    spacing_s: float | None = None
    recover_rpm: float | None = None
    found_near: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "rpm": self.rpm,
            "reason": self.reason.value,
            **{name: getattr(self, name) for name in _OPTIONAL if getattr(self, name) is not None},
            **({"found_near": self.found_near} if self.found_near else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Learned:
        def number(name: str) -> int | None:
            value = data.get(name)
            return int(value) if value is not None else None

        refused, backoff = data.get("refused_rpm"), data.get("backoff")
        spacing, recover = data.get("spacing_s"), data.get("recover_rpm")
        return cls(
            rpm=float(data["rpm"]),
            reason=Reason(data.get("reason", Reason.LEARNED)),
            requests=number("requests"),
            images=number("images"),
            tokens=number("tokens"),
            refused_rpm=float(refused) if refused is not None else None,
            backoff=str(backoff) if backoff is not None else None,
            spacing_s=float(spacing) if spacing is not None else None,
            recover_rpm=float(recover) if recover is not None else None,
            found_near=int(data.get("found_near") or 0),
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


_OPTIONAL = ("requests", "images", "tokens", "refused_rpm", "backoff", "spacing_s", "recover_rpm")
