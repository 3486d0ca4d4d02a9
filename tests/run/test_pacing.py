"""The adaptive pace: one test per input it takes, and convergence against sandbox limiters."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from runner.models import Limit, RateLimits
from runner.run.gate import jitter_allowance
from runner.run.pace_backoff import BACKOFF, BACKOFF_NEAR, FIRST_BACKOFF, RECOVER_TO
from runner.run.pace_state import Learned, Observation, Reason
from runner.run.pacing import (
    EPISODE_S,
    HEADER_SHARE,
    HEADER_SHARE_STEP,
    MIN_HEADER_SHARE,
    START_SHARE,
    Pace,
)
from runner.sandbox.ratelimit import SHAPES, LimiterShape, RateLimiter


def clean(at: float, limits: RateLimits | None = None, **kw: int) -> Observation:
    return Observation(at=at, rate_limited=False, limits=limits, **kw)


def refused(at: float, limits: RateLimits | None = None) -> Observation:
    return Observation(at=at, rate_limited=True, limits=limits)


def requests_limit(limit: int) -> RateLimits:
    return RateLimits(requests=Limit(limit=limit, remaining=limit - 1, reset_s=0.1))


def test_a_told_rate_is_where_the_pace_starts() -> None:
    pace = Pace(600, told=True)
    assert pace.rpm == 600
    assert pace.reason is Reason.CONFIGURED
    assert pace.interval() == pytest.approx(0.1)


def test_an_untold_rate_starts_low_and_doubles_while_clean_up_to_the_ceiling() -> None:
    pace = Pace(600, told=False)
    assert pace.rpm == pytest.approx(600 * START_SHARE)
    assert pace.reason is Reason.PROBING
    pace.observe(clean(0.0))
    pace.observe(clean(2.0))
    assert pace.rpm == pytest.approx(2 * 600 * START_SHARE)
    for second in range(3, 10):
        pace.observe(clean(float(second)))
    assert pace.rpm == 600
    assert pace.reason is Reason.CEILING


def test_the_requests_limit_header_sets_the_pace_under_the_ceiling() -> None:
    pace = Pace(1800, told=True)
    assert pace.observe(clean(0.0, requests_limit(600)))
    assert pace.rpm == pytest.approx(600 * HEADER_SHARE)
    assert pace.reason is Reason.HEADERS
    # Headers that allow more than the ceiling leave the pace at the ceiling.
    pace.observe(clean(1.0, requests_limit(5000)))
    assert pace.rpm == 1800
    assert pace.reason is Reason.CEILING


def test_the_headers_are_believed_over_probing() -> None:
    pace = Pace(600, told=False)
    pace.observe(clean(0.0, requests_limit(300)))
    for second in range(1, 30):
        pace.observe(clean(float(second), requests_limit(300)))
    assert pace.rpm == pytest.approx(300 * HEADER_SHARE)


def test_a_request_for_n_images_takes_n_of_an_images_limit() -> None:
    pace = Pace(600, told=True)
    pace.observe(clean(0.0, RateLimits(images=Limit(limit=60)), images=4))
    assert pace.learned.images == 60
    assert pace.interval(images=1) == pytest.approx(1 / HEADER_SHARE)
    assert pace.interval(images=4) == pytest.approx(4 / HEADER_SHARE)
    assert pace.rpm == 600  # the requests pace itself is not what binds


def test_tokens_per_request_count_against_a_tokens_limit() -> None:
    pace = Pace(600, told=True)
    pace.observe(clean(0.0, RateLimits(tokens=Limit(limit=6000)), tokens=1000))
    # 1000 tokens a request against 6000 a minute: one request every 10 s (and a margin).
    assert pace.interval() == pytest.approx(10 / HEADER_SHARE)


def climb(pace: Pace, start: float, seconds: float) -> float:
    """Clean answers every tenth of a second for ``seconds``; returns when they ended."""
    for tenth in range(1, int(seconds * 10) + 1):
        pace.observe(clean(start + tenth / 10))
    return start + seconds


def test_a_429_near_the_rate_refused_before_steps_back_less_and_probes_half_as_often() -> None:
    pace = Pace(900, told=True)
    pace.observe(refused(0.0))
    climb(pace, 0.0, 6.0)
    again = pace.rpm
    assert again == pytest.approx(900 * RECOVER_TO, rel=0.02)
    pace.observe(refused(6.0))
    # Refused near where it was before: a small step back; the estimate is the pace refused.
    assert pace.rpm == pytest.approx(again * BACKOFF_NEAR)
    assert pace.learned.refused_rpm == pytest.approx(again)
    climb(pace, 6.0, 6.0)
    first_climb = pace.rpm
    pace.observe(refused(12.0))
    climb(pace, 12.0, 6.0)
    # Found about there once more: the creep beyond the quick climb is slower each time.
    assert pace.rpm - pace.learned.refused_rpm * RECOVER_TO < first_climb - again * RECOVER_TO


def test_without_headers_the_rate_let_through_caps_the_backoff() -> None:
    """A limit counted over a long window lets a pace far over it through in bursts: what
    got through since the first 429, not the pace refused, says where the limit is."""
    pace = Pace(900, told=True)
    pace.observe(refused(0.0))
    # 20 successes in the 10 s after it (120/min), each answered a second after it left.
    for second in range(1, 11):
        for half in (0.0, 0.5):
            sent = second + half
            pace.observe(Observation(at=sent + 1, rate_limited=False, sent_at=sent))
    assert pace.rpm > 300
    pace.observe(refused(12.0))
    assert pace.rpm == pytest.approx(120, rel=0.15)
    assert pace.reason is Reason.BACKED_OFF


def test_a_429_well_under_the_rate_let_through_keeps_the_pace() -> None:
    """The limiter let 120 a minute through; backed off under that (refused by requests
    that came together), a 429 says two requests arrived closer than the pace, not that the
    limit is under it: the pace is kept, and so is the rate refused it climbs back toward."""
    pace = Pace(900, told=True)
    pace.observe(refused(0.0))

    def passed(first: float, last: float) -> None:
        # 120 a minute let through, each answered a second after it was sent.
        sent = first
        while sent <= last:
            pace.observe(Observation(at=sent + 1, rate_limited=False, sent_at=sent))
            sent += 0.5

    passed(0.5, 19.0)
    pace.observe(refused(20.0))  # at the rate let through
    assert pace.rpm == pytest.approx(120, rel=0.1)
    passed(19.5, 20.5)
    pace.observe(refused(21.6))  # the pace climbing back, over the rate let through
    under, limit_found = pace.rpm, pace.learned.refused_rpm
    assert under < 120 * 0.95
    pace.observe(refused(23.0))  # well under it
    assert pace.rpm >= under
    assert pace.learned.refused_rpm == limit_found


def test_a_worker_taking_up_anothers_backoff_counts_the_rate_let_through_from_then() -> None:
    """A worker that took up another's backoff before any 429 of its own judges its first
    one against what the route let through since, as the worker refused first does."""
    first, second = Pace(600, told=True), Pace(600, told=True)
    first.observe(refused(0.0))
    second.adopt(first.learned, at=0.1)
    # Known over the seconds since the backoff; too few seconds since the 429 alone.
    second.route_rate = lambda since: 120.0 if since <= 15.0 else None
    climb(second, 0.1, 20.0)
    second.observe(refused(20.5))
    assert second.rpm == pytest.approx(120)


def test_a_routes_first_429_backs_off_to_the_rate_its_wait_says_and_at_least_by_half() -> None:
    """Told 360 a minute, a limiter that allows no burst refuses the second request (a sixth
    of a second on) and asks for a third of a second more: it keeps to about 120, and the
    pace goes there, not to 180. A short wait (a drained bucket) still halves the pace."""
    strict = Pace(360, told=True)
    strict.observe(Observation(at=0.2, rate_limited=True, retry_after=0.32))
    assert strict.rpm == pytest.approx(60 / (60 / 360 + 0.32))
    bucket = Pace(900, told=True)
    bucket.observe(Observation(at=0.2, rate_limited=True, retry_after=0.005))
    assert bucket.rpm == pytest.approx(900 * FIRST_BACKOFF)


def test_a_wait_is_counted_from_how_far_apart_the_slot_kept_the_request() -> None:
    """Not told the rate, four workers start at 150 a minute and keep their first requests a
    fifth of an interval further apart than it (warming up): a strict limiter of 120 asks
    the next for 22 ms more. Counted from the interval alone that says 142 a minute, and the
    pace climbed back there and was refused again; counted from the slot, about 120."""
    pace = Pace(600, told=False)
    gap = 60 / pace.rpm
    pace.observe(Observation(at=0.5, rate_limited=True, retry_after=0.022, spaced_s=gap * 1.2))
    assert pace.learned.recover_rpm is not None
    assert pace.learned.recover_rpm <= 120


def test_a_whole_second_retry_after_is_not_read_as_the_rate_the_limiter_keeps() -> None:
    """``Retry-After`` comes in whole seconds, rounded up (the sandbox's laozhang profile sends
    no ``retry-after-ms``): ``1`` for a request a few milliseconds early says only that the
    limiter wanted less than a second. Told the true 600 a minute and running clean, one such
    429 steps the pace back a little, not to a quarter of it (60 / (0.1 s + 1 s) = 55 a
    minute, floored at 150)."""
    pace = Pace(600, told=True)
    climb(pace, 0.0, 4.0)
    pace.observe(Observation(at=4.05, rate_limited=True, retry_after=1.0))
    assert pace.rpm == pytest.approx(600 * BACKOFF_NEAR)


def test_after_a_whole_second_retry_after_the_pace_climbs_back_quickly() -> None:
    """A later 429 saying ``Retry-After: 1`` backs off the usual step and the pace climbs
    back quickly toward the pace refused, not at the slow probe from the step down (a
    recovery capped at the rate 60 / (interval + 1 s) says: 0.7 of it 5 s on)."""
    pace = Pace(900, told=True)
    pace.observe(refused(0.0))
    climb(pace, 0.0, 1.0)
    again = pace.rpm
    pace.observe(Observation(at=1.05, rate_limited=True, retry_after=1.0))
    assert pace.rpm == pytest.approx(again * BACKOFF)
    climb(pace, 1.05, 5.0)
    assert pace.rpm >= 0.9 * again


def test_headers_without_a_limit_do_not_make_small_waits_early_at_a_taught_pace() -> None:
    """A gateway that sends ``x-ratelimit-remaining-*`` and ``-reset-*`` but no limit gives no
    pace: at a pace the 429s taught, a small-wait 429 backs it off as it does without any
    headers, rather than spacing requests out at a pace over the limit."""
    remaining_only = RateLimits(requests=Limit(remaining=0, reset_s=0.05))
    pace = Pace(900, told=True)
    pace.observe(refused(0.0))
    climb(pace, 0.0, 30.0)
    probed = pace.rpm
    pace.observe(Observation(at=31.0, rate_limited=True, limits=remaining_only, retry_after=0.002))
    assert pace.rpm < probed
    assert not pace.learned.spacing_s


def test_where_the_limit_was_found_before_is_the_routes_not_one_workers() -> None:
    """A worker taking up another's backoff near the rate refused before probes past it as
    slowly as the worker that found it there: four workers each counting only their own
    refusals probed the route four times as often."""
    first, second = Pace(900, told=True), Pace(900, told=True)
    first.observe(refused(0.0))
    climb(first, 0.0, 6.0)
    first.observe(refused(6.0))  # near the rate refused before
    assert first.learned.found_near == 1
    assert Learned.from_json(first.learned.to_json()).found_near == 1
    second.adopt(first.learned, at=6.0)
    climb(first, 6.0, 6.0)
    climb(second, 6.0, 6.0)
    assert second.rpm <= first.rpm


def test_a_429_without_headers_backs_off_once_per_episode() -> None:
    pace = Pace(900, told=True)
    assert pace.observe(refused(10.0))
    assert pace.rpm == pytest.approx(900 * FIRST_BACKOFF)
    assert pace.reason is Reason.BACKED_OFF
    assert pace.learned.refused_rpm == 900
    # The requests sent before the backoff are refused too: they do not back off again.
    pace.observe(refused(10.0 + EPISODE_S / 2))
    assert pace.rpm == pytest.approx(900 * FIRST_BACKOFF)
    pace.observe(refused(10.0 + EPISODE_S))
    assert pace.rpm == pytest.approx(900 * FIRST_BACKOFF * BACKOFF)
    assert pace.learned.refused_rpm == pytest.approx(900 * FIRST_BACKOFF)


def test_after_a_backoff_the_pace_climbs_back_quickly_then_probes_slowly() -> None:
    pace = Pace(900, told=True)
    pace.observe(refused(0.0))
    for tenth in range(1, 60):
        pace.observe(clean(tenth / 10))
    near = pace.rpm
    assert near == pytest.approx(900 * RECOVER_TO, rel=0.02)
    for tenth in range(60, 110):
        pace.observe(clean(tenth / 10))
    # Near the refused rate it creeps: half a percent of it a second.
    assert near < pace.rpm <= near + 900 * 0.005 * 5 + 1e-6


def test_refused_in_a_row_the_pace_does_not_climb_back_quickly_toward_the_pace_refused() -> None:
    """Two refusals in one episode: the pace refused was well over the limit (a request
    that arrived a hair early, a probe just past it, is refused alone). The pace probes
    upward slowly from its backoff instead of climbing back to 0.97 of the pace refused (then
    refused again, as four workers told 3x were every 2-4 s for their first 15 s); once the
    rate let through is known, it backs off to that and climbs no faster past it."""
    alone = Pace(900, told=True)
    alone.observe(refused(0.0))
    climb(alone, 0.0, 3.0)
    assert alone.rpm > 900 * FIRST_BACKOFF * 1.4
    pace = Pace(900, told=True)
    pace.observe(refused(0.0))
    pace.observe(refused(0.2))

    def passed(first: int, last: int) -> None:
        # 300 a minute let through, each answered a second after it was sent.
        for k in range(first, last + 1):
            sent = 0.2 + k * 0.2
            pace.observe(Observation(at=sent + 1, rate_limited=False, sent_at=sent))

    passed(1, 15)
    # Four seconds of the slow probe: half a percent of the pace refused a second.
    assert pace.rpm <= 900 * FIRST_BACKOFF + 900 * 0.005 * 4 + 1e-6
    passed(16, 45)
    pace.observe(refused(10.3))
    pace.observe(refused(10.4))
    climb(pace, 10.4, 6.0)
    assert 300 * 0.9 <= pace.rpm <= 300 * 1.1


def test_a_429_despite_the_headers_uses_less_of_the_limit() -> None:
    pace = Pace(900, told=True)
    pace.observe(refused(0.0, requests_limit(300)))
    assert pace.rpm == pytest.approx(300 * (HEADER_SHARE - HEADER_SHARE_STEP))
    for second in range(1, 60):
        pace.observe(refused(float(second) * 2, requests_limit(300)))
    assert pace.rpm == pytest.approx(300 * MIN_HEADER_SHARE)


def test_other_failures_without_headers_do_not_slow_the_pace() -> None:
    pace = Pace(600, told=True)
    pace.observe(clean(0.0))
    pace.observe(clean(1.0))
    assert pace.rpm == 600


def test_a_learned_pace_is_where_the_next_run_starts_under_its_ceiling() -> None:
    learned = Learned(rpm=250.0, reason=Reason.HEADERS, requests=255, images=20)
    again = Learned.from_json(learned.to_json())
    assert again == learned
    pace = Pace(600, told=False, learned=again)
    assert pace.rpm == 250
    assert pace.learned.images == 20
    assert Pace(100, told=True, learned=again).rpm == 100
    assert "255 req/min" in learned.limit_text


def simulate(
    shape: LimiterShape,
    *,
    limit: int,
    ceiling: float,
    headers: bool,
    late: Callable[[], float] = lambda: 0.0,
    arrived: list[float] | None = None,
) -> list[bool]:
    """Send 600 requests through a pace and a sandbox limiter: ``True`` for each refusal.

    Answers come back at once, a refusal with the wait it asks for; requests leave one
    interval, the gate's allowance for arrival jitter and the pace's spacing apart, and each
    arrives ``late()`` seconds after it left; a refusal holds the next request for its
    ``Retry-After`` as the gate's pause does. ``arrived`` collects the admitted arrivals.
    """
    now = 0.0
    limiter = RateLimiter(limit, None, lambda: now, shape=shape, window=10.0)
    pace = Pace(ceiling, told=True)
    refusals: list[bool] = []
    for _ in range(600):
        at = now + late()
        admission = limiter.admit("key", 1, at=at)
        assert admission is not None
        limits = requests_limit(limit) if headers else None
        wait = None if admission.allowed else admission.retry_after_s
        pace.observe(
            Observation(at=at, rate_limited=not admission.allowed, limits=limits, retry_after=wait)
        )
        refusals.append(not admission.allowed)
        if admission.allowed and arrived is not None:
            arrived.append(at)
        gap = pace.interval()
        now += max(gap + jitter_allowance(gap) + pace.spacing, admission.retry_after_s)
    return refusals


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("headers", [True, False], ids=["headers", "no-headers"])
def test_told_three_times_too_high_the_pace_converges(shape: LimiterShape, headers: bool) -> None:
    """At 3x over-told, after the first 200 requests only a handful more are refused."""
    refusals = simulate(shape, limit=300, ceiling=900, headers=headers)
    assert sum(refusals[200:]) <= (1 if headers else 12)
    assert sum(refusals) <= (3 if headers else 40)


@pytest.mark.parametrize("shape", SHAPES)
def test_told_the_truth_nothing_is_refused(shape: LimiterShape) -> None:
    refusals = simulate(shape, limit=300, ceiling=300 * HEADER_SHARE, headers=False)
    assert sum(refusals) == 0


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", range(3))
def test_over_told_without_headers_the_waits_asked_find_the_limit_in_a_few_429s(
    shape: LimiterShape, seed: int
) -> None:
    """Told 3x, without headers, arrivals jittering by up to 10 ms: the wait each 429 asks
    for says how far over the limit the pace is, and the backoff goes there rather than
    halving in steps: at most 10 refused in 600 requests on every limiter shape (halving, then
    0.7, in steps: 11-14 on strict and bucket, 14-18 on window, 25-29 on sliding), with at
    least 0.85 of the limit let through over the last 400."""
    rng = random.Random(seed)
    arrived: list[float] = []
    refusals = simulate(
        shape,
        limit=300,
        ceiling=900,
        headers=False,
        late=lambda: rng.uniform(0.0, 0.01),
        arrived=arrived,
    )
    assert sum(refusals) <= 10
    last = arrived[-400:]
    assert (len(last) - 1) / (last[-1] - last[0]) * 60 >= 0.85 * 300


@pytest.mark.parametrize("seed", range(5))
def test_over_told_on_a_strict_limiter_the_limit_found_is_not_read_as_early_arrivals(
    seed: int,
) -> None:
    """Told 3x a strict limit without headers, arrivals jittering by up to 10 ms: once the
    pace has backed off, the few-millisecond waits of the 429s as it probes back past the
    limit are the limit found, and back it off. Read as early arrivals, they kept the pace
    over the limit while requests were spaced out a millisecond at a time: 2-4 429s after
    the first 200 requests and 16-22 in all, here 1 and 12-14."""
    rng = random.Random(seed)
    refusals = simulate(
        "strict", limit=300, ceiling=900, headers=False, late=lambda: rng.uniform(0.0, 0.01)
    )
    assert sum(refusals[200:]) <= 1
    assert sum(refusals) <= 15


@pytest.mark.parametrize("headers", [True, False], ids=["headers", "no-headers"])
def test_arrivals_that_jitter_past_the_allowance_space_requests_out_not_slow_them(
    headers: bool,
) -> None:
    """Told the truth, a strict limiter, arrivals late by up to 4% of an interval (twice the
    allowance): the first refusals each ask to wait a few milliseconds, requests are kept
    that much further apart, and the pace stays at the limit. Before, each such 429 backed
    the pace off by 5-50% (or took 2% off the headers' share), and it never got back."""
    rng = random.Random(15)
    arrived: list[float] = []
    refusals = simulate(
        "strict",
        limit=300,
        ceiling=300,
        headers=headers,
        late=lambda: rng.uniform(0.0, 0.008),
        arrived=arrived,
    )
    assert sum(refusals[200:]) == 0
    assert sum(refusals) <= 3
    last = arrived[-400:]
    assert (len(last) - 1) / (last[-1] - last[0]) * 60 >= 0.95 * 300


def test_a_pace_takes_up_the_wider_spacing_another_worker_learned() -> None:
    pace = Pace(300, told=True)
    pace.observe(Observation(at=1.0, rate_limited=True, retry_after=0.003))
    assert pace.rpm == 300
    assert pace.spacing == pytest.approx(0.003)
    other = Pace(300, told=True)
    assert other.space_out(pace.learned.spacing_s)
    assert not other.space_out(0.001)
    assert other.spacing == pytest.approx(0.003)
    assert Learned.from_json(pace.learned.to_json()).spacing_s == pytest.approx(0.003)


def test_a_spacing_learned_far_below_the_limit_stays_within_arrival_jitter() -> None:
    """Paced far under the limit (the headers gave a low one), small-wait 429s still count
    as a hair early (the interval is long): summed, they reached 0.6 s and more, kept as
    route state. What is kept is bounded, as arrival jitter does not grow with the interval,
    and once the pace is fast again it holds requests no more apart than 4% of an interval."""
    pace = Pace(120, told=True)
    pace.observe(clean(0.0, requests_limit(12)))
    assert pace.interval() > 2.0
    limits = requests_limit(12)
    for k in range(200):  # then many refusals asking for a short wait
        pace.observe(Observation(at=100.0 + k, rate_limited=True, limits=limits, retry_after=0.05))
    learned = pace.learned.spacing_s
    assert learned is not None
    assert learned <= 0.025
    pace.observe(clean(400.0, requests_limit(120)))
    assert pace.rpm == 120
    assert pace.spacing <= 0.04 * pace.interval()


def test_at_a_pace_the_429s_taught_a_small_wait_backs_off_not_spaces_out() -> None:
    """Backed off once without headers and probing upward, the pace is refused by a few
    milliseconds as it passes the limit of a limiter that allows no burst: that is the
    limit found, and the pace steps back, rather than spacing requests out a millisecond at
    a time at a pace over the limit."""
    pace = Pace(900, told=True)
    pace.observe(refused(0.0))
    climb(pace, 0.0, 30.0)
    probed = pace.rpm
    pace.observe(Observation(at=31.0, rate_limited=True, retry_after=0.002))
    assert pace.rpm < probed
    assert pace.reason is Reason.BACKED_OFF
    assert not pace.learned.spacing_s


def test_a_worker_taking_up_a_pace_still_doubling_goes_on_doubling() -> None:
    """Untold, workers share one pace: one taking up another's (it saved first) keeps the
    start nobody gave, and doubles on from it, rather than creep from a quarter of the ceiling."""
    first, second = Pace(600, told=False), Pace(600, told=False)
    first.observe(clean(0.0))
    first.observe(clean(2.0))
    second.observe(clean(0.0))
    second.adopt(first.learned, at=2.0)
    second.observe(clean(2.0))
    second.observe(clean(4.0))
    assert second.rpm == pytest.approx(4 * 600 * START_SHARE)


def test_where_a_backoff_climbs_back_to_is_learned_with_it() -> None:
    """The quick climb after a backoff stops where the worker that backed off said (under
    what the limiter let through), for every worker taking the backoff up."""
    pace = Pace(600, told=True)
    pace.observe(refused(0.0))
    other = Pace(600, told=True)
    other.adopt(Learned.from_json(pace.learned.to_json()), at=0.0)
    assert pace.learned.recover_rpm == pytest.approx(0.97 * 600)
    assert other.learned.recover_rpm == pytest.approx(pace.learned.recover_rpm)
