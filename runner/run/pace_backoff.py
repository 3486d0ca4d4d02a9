"""Where a 429 without headers backs a route's pace off to, and where it climbs back quickly
to: the step of :class:`runner.run.pacing.Pace`'s backoff, apart from the controller."""

from __future__ import annotations

#: The pace after a route's first 429 without headers, as a fraction of the pace refused
#: (nothing is known yet of the limit: halve, as TCP does).
FIRST_BACKOFF = 0.5
#: The pace after a later 429 without headers, as a fraction of the pace refused.
BACKOFF = 0.7
#: The same when the limit is known to be about where the refusal came: the pace refused is
#: close to the one refused before, or had run clean for a while. It steps back a little.
BACKOFF_NEAR = 0.95
#: Within this fraction of the pace refused before, a refusal counts as near it.
NEAR = 0.05
#: How close below the refused rate the pace climbs back quickly.
RECOVER_TO = 0.97
#: A 429's wait says how far over the limit the pace is: a limiter that allows no burst
#: refused a request that came an interval after the one before and wants it ``wait`` later,
#: so it keeps to one per ``interval + wait``. A backoff without headers goes to that rate,
#: bounded: on a route's first 429, at least its step (halving; BACKOFF_NEAR once the pace
#: ran clean: see ``runner.run.pacing.SETTLED_ANSWERS``) and down to this share of the pace;
#: on a later one, between the usual step (a limit counted over a window asks to wait out the
#: window, far longer) and BACKOFF_NEAR. The pace climbs back quickly to no more than that
#: rate. Halving, then 0.7, in steps, four workers told 3x on a strict limiter backed off 4-5
#: times with 10 429s in their first 6 s; one process halving from its untold start was
#: refused 3-4 times more climbing back to 0.97 of it. Backing off less than halving on a
#: first 429, a pace still doubling (a token bucket, drained, asking a few milliseconds)
#: stayed at 0.8 of what was refused, and was refused 11 times in 5 s. Counted from the
#: interval alone, not the slot's allowance on top (a fifth of an interval while a worker
#: warms up), a wait said 142 a minute for a strict 120, and four workers not told the rate
#: were refused 6 times more climbing back to it.
WAIT_FLOOR_FIRST = 0.25


def _least_wait(wait: float) -> float:
    """The least a refusal's ``wait`` says the limiter wanted: ``Retry-After`` comes in whole
    seconds, rounded up (a server without ``retry-after-ms`` says ``1`` for a request a few
    milliseconds early), so a wait of ``w`` whole seconds says only that it wanted more than
    ``w - 1``. Read as the wait itself, ``Retry-After: 1`` at 600 a minute said the limiter
    kept 55, and a route told its true rate and running clean backed off to a quarter of it."""
    return wait - 1.0 if wait >= 1.0 and wait.is_integer() else wait


def backed_off(
    rpm: float,
    share: float,
    *,
    first: bool,
    wait: float | None,
    passed: float | None,
    spaced: float | None = None,
) -> tuple[float, float]:
    """The pace a 429 without headers at ``rpm`` backs off to, and where it climbs back
    quickly to: ``share`` of it, moved by what the refusal's ``wait`` says (see
    ``WAIT_FLOOR_FIRST``), capped by what the limiter let through lately (``passed``: see
    ``runner.run.pacing.GOODPUT_WINDOW_S``). The wait (at least: see ``_least_wait``)
    is counted from how far apart the refused request was kept from the one before
    (``spaced``: its interval and the gate's allowance for late arrivals), else from the
    interval."""
    new, target = rpm * share, rpm * RECOVER_TO
    least = _least_wait(wait) if wait else 0.0
    said = 60.0 / ((spaced or 60.0 / rpm) + least) if least > 0 else None
    if said is not None:
        low, high = (WAIT_FLOOR_FIRST, share) if first else (share, BACKOFF_NEAR)
        new = min(max(said, rpm * low), rpm * high)
        target = min(target, max(new, said))
    if passed is not None:
        # The larger of the two: each says the limit is at least that (a strict limiter
        # lets a pace over it through at half that pace, a window asks a long wait).
        bound = max(passed, said or 0.0)
        new, target = min(new, bound), min(target, bound * (1 + NEAR))
    return new, target
