"""The adaptive pace of a route: how many requests a minute to send, and why.

:class:`Pace` is a pure controller (no clock, no I/O): the gate feeds it each attempt's
outcome as an :class:`Observation` and asks it for the gap to leave before the next request.

- The configured ``rpm`` is a ceiling, never exceeded.
- ``x-ratelimit-limit-*`` headers (requests, images, tokens) set the pace outright; a 429 while
  pacing from them lowers the share of the limit used, a step at a time.
- Without headers a 429 backs off multiplicatively and the pace probes upward while clean:
  quickly back to just under the rate that was refused, slowly beyond it (AIMD). The wait the
  429 asked for moves the step: a limiter that allows no burst says by it what rate it keeps.
- A 429 that asks to wait only a hair (a tenth of an interval at most) at a pace the user or
  the headers gave refused a request that arrived a hair early: requests are kept that much
  further apart (up to 4% of an interval in all), the pace is kept. At a pace the 429s taught,
  it is the limit found, and backs the pace off.
- Without headers, a 429 at a pace well under the rate the limiter let through lately keeps
  the pace: two requests arrived closer than it.
- A route whose rate nobody gave starts low and doubles while clean until the first 429 or
  the first headers.
- A request for ``n`` images takes ``n`` of an images-per-minute limit; one reporting ``t``
  tokens takes ``t`` of a tokens-per-minute limit (from the route's running average).
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import replace

from runner.models import RateLimits
from runner.run.pace_backoff import (
    BACKOFF,
    BACKOFF_NEAR,
    FIRST_BACKOFF,
    NEAR,
    RECOVER_TO,
    backed_off,
)
from runner.run.pace_state import Learned, Observation, Reason

#: Share of a limit the headers gave that the pace uses at first (the gate leaves requests a
#: few milliseconds more than an interval apart on the wire, for arrival times that jitter).
HEADER_SHARE = 1.0
#: The lowest share a run of 429s can push the header pace down to.
MIN_HEADER_SHARE = 0.85
#: What one 429 takes off the header share.
HEADER_SHARE_STEP = 0.02
#: Clean answers in a row after which a refusal says the limit is about at the pace (a user
#: who gave the true rate, a probe just past the limit), not far under it.
SETTLED_ANSWERS = 20
#: Quick climb (per clean second), and the probe beyond the refused rate (of it, per second).
RECOVER_RATE = 0.15
PROBE_RATE = 0.01
#: Near the refused rate the pace creeps at this share of it a second, halved with every
#: refusal near it in a row: each time the limit is found where it was, it is probed half as
#: often (a refusal a probe costs, so their number grows with the log of the run's length).
#: The count is the route's (``Learned.found_near``): kept by each of four workers for the
#: refusals it saw itself, the route was probed every 10-40 s all run (a 429 or two each).
CREEP_RATE = 0.003
#: Without headers, what the limiter let through since it first refused (successes by when
#: they were sent, over at most this many seconds before the last answered one) caps the pace
#: a 429 backs off to: a limit counted over a window (a sliding log, a fixed minute) lets a
#: pace far over it through in bursts, with long waits between, and the bursts say nothing
#: of the limit while the rate let through does.
GOODPUT_WINDOW_S = 60.0
#: That rate is used only once it covers this many seconds and successes.
GOODPUT_MIN_S = 5.0
GOODPUT_MIN_OK = 5
#: A route nobody gave a rate starts at this fraction of its ceiling and doubles this often.
START_SHARE = 0.25
DOUBLING_S = 2.0
#: 429s within this many seconds of a backoff belong to the same episode (sent before it),
#: and so do those of requests whose slots were taken before it, at the pace before: four
#: workers hold a slot each, booked up to four intervals ahead, and a strict limiter refused
#: every other one of them for 2 s after a backoff (counted as a new backoff after 1 s,
#: each probe of the limit cost three 429s and two backoffs).
EPISODE_S = 1.0
#: The slowest pace (requests a minute).
FLOOR_RPM = 1.0
#: A 429 asking to wait at most this share of an interval refused a request that arrived a
#: hair early: a limiter that allows no burst and arrival times that jitter (a ledger row or
#: an event loop slower than the one before), or a pace a hair too fast. The pace is kept and
#: requests are kept that much further apart; backing off after it (by 5-50%) cost four
#: workers told the true rate of a strict limiter 0.10 of it.
#: That reading holds only at a pace someone gave (the user, the headers): a pace the 429s
#: without headers taught (backed off, then probing upward) or one still doubling from a
#: start nobody gave is refused with small waits as it passes the limit of a limiter that
#: allows no burst, the wait the few milliseconds a request came too soon. Read as early
#: arrivals, those spaced requests out a millisecond or two at a time and kept the pace over
#: the limit: 4-9 429s 1-2 s apart where one backoff would have done (a strict limiter
#: without headers; one process told 3x, four workers told 3x or not told).
EARLY_SHARE = 0.1
#: Never more than this share of an interval is added so (20 ms at 120 a minute, over the
#: 4-18 ms PostgreSQL ledger rows take on a lightly loaded machine): a refusal past that is a
#: pace too fast, backed off. Four workers whose paces differ refuse each other's requests by
#: small waits too, and summed without a bound those cost a tenth of the rate for good.
MAX_SPACING_SHARE = 0.04
#: Nor is more than this ever kept (seconds): what is added is arrival jitter, which does not
#: grow with the interval. Counted against the long interval of a pace backed off far below
#: the limit, small waits summed to over half a second, kept as route state.
MAX_SPACING_S = 0.025


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
        #: Refusals without headers since the last backoff began an episode.
        self._refused_in_episode = 0
        self._last_at: float | None = None
        #: Clean answers since the last 429, and refusals near the refused rate in a row.
        self._clean = 0
        self._near = 0
        #: When the first 429 without headers came, and the successes since: (sent, latency).
        self._bound_since: float | None = None
        self._passed: deque[tuple[float, float]] = deque()
        #: The route's successes a minute since a moment (``None``: too few known yet), where
        #: several workers share the route and each sees only its own answers (see
        #: ``runner.run.shared_gate``): what the rate let through is judged on instead.
        self.route_rate: Callable[[float], float | None] | None = None
        #: Names this pace's backoffs apart from other workers' (see ``Learned.backoff``).
        self._name = uuid.uuid4().hex[:8]
        self._backoffs = 0
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

    def adopt(self, learned: Learned, at: float | None = None) -> None:
        """Take up a pace learned elsewhere (an earlier run, another worker), keeping what
        this one has seen since it started (the rate let through since the first 429).

        Another worker's backoff taken up ``at`` a time starts an episode here as well: the
        429s of requests sent before it are part of it, not a reason to back off again."""
        rpm = min(self.ceiling, learned.rpm)
        if at is not None and learned.backoff not in (None, self.learned.backoff):
            self._backoff_at = at
            self._refused_in_episode = 0
            # The route has been refused: what it lets through from now on caps a backoff
            # here too (see ``route_rate``), not only after this worker's own first 429.
            if self._bound_since is None:
                self._bound_since = at
            # How often the limit was found where it was is the route's, whoever found it.
            self._near = learned.found_near
        spacing = max(self.learned.spacing_s or 0.0, learned.spacing_s or 0.0) or None
        self.learned = replace(
            learned, rpm=rpm, reason=self._reason_for(rpm, learned.reason), spacing_s=spacing
        )
        # Another worker's pace still doubling from a start nobody gave goes on doubling here.
        self._slow_start = self._slow_start and _probing(learned)

    def space_out(self, spacing_s: float | None) -> bool:
        """Keep requests at least ``spacing_s`` further apart than an interval (what another
        worker learned); ``True`` when that is more than before."""
        if not spacing_s or spacing_s <= (self.learned.spacing_s or 0.0):
            return False
        self.learned = replace(self.learned, spacing_s=spacing_s)
        return True

    @property
    def spacing(self) -> float:
        """Seconds requests are kept further apart than an interval (see ``EARLY_SHARE``)."""
        return min(self.learned.spacing_s or 0.0, MAX_SPACING_SHARE * self.interval())

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
        # A refusal of a request that arrived a hair early spaces requests out; any other
        # backs the pace off.
        early = seen.rate_limited and self._arrived_early(seen)
        if early:
            assert seen.retry_after is not None
            spacing = min(MAX_SPACING_S, self.spacing + seen.retry_after)
            self.learned = replace(self.learned, spacing_s=spacing)
            self._slow_start = False  # the limit is about here
        if seen.limits is not None and _has_limit(seen.limits):
            self._from_headers(seen, refused=seen.rate_limited and not early)
        elif seen.rate_limited:
            if not early:
                self._back_off(seen)
        else:
            self._clean += 1
            self._passed_through(seen)
            self._probe(seen.at)
        self._last_at = seen.at
        return self.learned != before

    def _arrived_early(self, seen: Observation) -> bool:
        """Whether a refusal asked for a wait short enough to say its request arrived a hair
        early, while requests are not yet spaced out as far as that ever goes, at a pace
        someone gave (the user, the headers): see ``EARLY_SHARE``."""
        given = seen.limits is not None and _has_limit(seen.limits)
        if not given and (self._slow_start or self.learned.refused_rpm is not None):
            return False
        interval = self.interval(seen.images)
        wait = seen.retry_after
        if wait is None or not 0 < wait <= EARLY_SHARE * interval:
            return False
        return self.spacing + wait <= MAX_SPACING_SHARE * interval

    def _from_headers(self, seen: Observation, *, refused: bool) -> None:
        assert seen.limits is not None
        if refused and not self._in_episode(seen.at):
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
            rpm=rpm,
            reason=reason,
            requests=requests,
            images=images,
            tokens=tokens,
            spacing_s=self.learned.spacing_s,
        )

    def _back_off(self, seen: Observation) -> None:
        at = seen.at
        if self._bound_since is None:
            self._bound_since = at
        if self._in_episode(at, seen.booked_at):
            self._refused_in_episode += 1
            if self._refused_in_episode == 2:
                self._no_quick_climb(at)
            return
        passed = self._goodput(at)
        if passed is not None and self.rpm < passed * (1 - NEAR):
            # Refused well under the rate the limiter let through lately: the limit is not
            # under the pace, two requests arrived closer than it (one left late for its
            # slot, the next on time). The pace is kept: backed off, four workers on a
            # strict limiter went from 0.72 of it to 0.50 a second or two after a backoff,
            # took that as the rate refused, and probed up from it for a minute and more.
            self._clean = 0
            return
        self._backoff_at = at
        self._refused_in_episode = 1
        self._slow_start = False
        rpm, before = self.rpm, self.learned.refused_rpm
        near = before is not None and abs(rpm - before) <= NEAR * before
        settled = self._clean >= SETTLED_ANSWERS and (before is None or rpm <= before * (1 + NEAR))
        self._clean = 0
        if near or settled:
            # The limit is about here: step back a little, and probe it half as often.
            share, self._near = BACKOFF_NEAR, self._near + 1
        else:
            share, self._near = (FIRST_BACKOFF if before is None else BACKOFF), 0
        new, target = backed_off(
            rpm,
            share,
            first=before is None,
            wait=seen.retry_after,
            spaced=seen.spaced_s,
            passed=passed,
        )
        self._backoffs += 1
        self.learned = replace(
            self.learned,
            rpm=max(FLOOR_RPM, new),
            reason=Reason.BACKED_OFF,
            refused_rpm=rpm,
            backoff=f"{self._name}.{self._backoffs}",
            recover_rpm=target,
            found_near=self._near,
        )

    def _no_quick_climb(self, at: float) -> None:
        """A second refusal in one episode: the limiter refused requests in a row, so the
        pace refused was well over the limit, not a hair (one request that arrived early, a
        probe just past it). The pace climbs back quickly only to what the limiter let
        through, if that is known, not toward the pace refused: climbing back at 15% a
        second toward 0.97 of it, four workers told three times the limit (or doubling
        from an untold start) were refused again every 2-4 s for their first 15 s."""
        recover = self.learned.recover_rpm
        floor = max(self.rpm, self._goodput(at) or 0.0)
        if recover is not None and recover > floor:
            self.learned = replace(self.learned, recover_rpm=floor)

    def _passed_through(self, seen: Observation) -> None:
        if self._bound_since is None or seen.sent_at is None:
            return
        self._passed.append((seen.sent_at, seen.latency))
        while self._passed and self._passed[0][0] < seen.sent_at - 2 * GOODPUT_WINDOW_S:
            self._passed.popleft()

    def _goodput(self, at: float) -> float | None:
        """Requests a minute the limiter let through lately, or ``None`` when too few are known.

        Counted by when they were sent, up to the longest recent latency ago (requests sent
        later may still be on their way), and scaled to the route's whole traffic.
        """
        if self._bound_since is None:
            return None
        if self.route_rate is not None:
            return self.route_rate(max(self._bound_since, at - GOODPUT_WINDOW_S))
        if not self._passed:
            return None
        recent = list(self._passed)[-SETTLED_ANSWERS:]
        until = at - max(latency for _, latency in recent)
        since = max(self._bound_since, until - GOODPUT_WINDOW_S)
        count = sum(1 for sent, _ in self._passed if since < sent <= until)
        if until - since < GOODPUT_MIN_S or count < GOODPUT_MIN_OK:
            return None
        return count * 60.0 / (until - since)

    def _probe(self, at: float) -> None:
        if self.learned.requests is not None or self._last_at is None:
            return
        dt = max(0.0, at - self._last_at)
        rpm, refused = self.rpm, self.learned.refused_rpm
        if self._slow_start:
            rpm *= 2 ** (dt / DOUBLING_S)
        elif refused is not None and rpm < (
            target := self.learned.recover_rpm or refused * RECOVER_TO
        ):
            rpm = min(target, rpm * (1 + RECOVER_RATE * dt))
        elif refused is not None and rpm < refused * (1 - NEAR):
            # Below where the limit was found, the rate let through said to stop: probe on.
            rpm += refused * PROBE_RATE / 2 * dt
        elif refused is not None and rpm < refused * (1 + NEAR):
            # Near the rate refused before: creep, since that is where the limit is.
            rpm += refused * CREEP_RATE / 2**self._near * dt
        else:
            rpm += (refused or self.ceiling) * PROBE_RATE * dt
        rpm = min(self.ceiling, rpm)
        if rpm != self.rpm:
            reason = self._reason_for(rpm, self.learned.reason)
            self.learned = replace(self.learned, rpm=rpm, reason=reason)

    def _reason_for(self, rpm: float, otherwise: Reason) -> Reason:
        return Reason.CEILING if rpm >= self.ceiling else otherwise

    def _in_episode(self, at: float, booked_at: float | None = None) -> bool:
        if self._backoff_at is None:
            return False
        return at - self._backoff_at < EPISODE_S or (
            booked_at is not None and booked_at < self._backoff_at
        )


def _probing(learned: Learned) -> bool:
    """Whether ``learned`` is a pace still doubling from a start nobody gave."""
    return learned.reason is Reason.PROBING and learned.refused_rpm is None and not learned.requests


def _has_limit(limits: RateLimits) -> bool:
    return any(_limit(limits, kind) for kind in ("requests", "images", "tokens"))


def _limit(limits: RateLimits, kind: str) -> int | None:
    window = getattr(limits, kind)
    return window.limit if window is not None and window.limit else None


def _average(current: float | None, value: float) -> float:
    return value if current is None else current * 0.9 + value * 0.1
