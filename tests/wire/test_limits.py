"""Rate-limit answers: how long the server says to wait, what the route does about it, and
what the ledger keeps of the limits the server reported.

A ``Retry-After`` beyond the job's deadline stops the route for this run instead of pausing
it silently; ``x-ratelimit-reset-requests`` (a Go duration) is honoured when no
``Retry-After`` came.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from .conftest import MakeWorld
from .harness import assert_paid_once, briefs

pytestmark = pytest.mark.anyio

#: A run that honours the rules ends well within this; one that pauses for the hint (6 min
#: at the least here) hangs. Not tighter: on a loaded machine a run that waits out a 1 s hint
#: took over 4 s.
QUICK = 30.0


async def test_retry_after_beyond_the_deadline_stops_the_route(zoo_world: MakeWorld) -> None:
    """``Retry-After: 86400`` with an hour's deadline: the route stops, the run ends now."""
    world = zoo_world("retry_after_day")
    out = await world.run_case(jobs=2, deadline=QUICK)
    assert_paid_once(world, out)
    assert len(out.seen) == 1, briefs(out)
    attempt = out.only_attempt("job-0")
    assert (attempt["outcome"], attempt["http_status"]) == ("rate_limited", 429)
    assert attempt["retry_after"] == 86400
    assert attempt["rate_limits"] is None  # no x-ratelimit-* header came
    assert attempt["charge_status"] == "not_charged"
    # It says until when: a minute between the attempt's start and end, a day later.
    until = {
        (attempt[at] + timedelta(days=1)).strftime("%Y-%m-%d %H:%M")
        for at in ("started_at", "finished_at")
    }
    assert any(u in out.stopped.get("openai", "") for u in until), out.stopped
    assert not {"failed", "unknown"} & set(out.ledger.states())


async def test_ratelimit_reset_beyond_the_deadline_stops_the_route(zoo_world: MakeWorld) -> None:
    """A 429 with only ``x-ratelimit-reset-requests: 6m0s``, a minute's deadline: 360 s
    recorded as the wait, the route stops."""
    world = zoo_world("ratelimit_reset_6m", deadline=60.0)
    out = await world.run_case(jobs=2, deadline=QUICK)
    assert_paid_once(world, out)
    assert len(out.seen) == 1, briefs(out)
    attempt = out.only_attempt("job-0")
    assert attempt["outcome"] == "rate_limited"
    assert attempt["retry_after"] == 360
    assert attempt["rate_limits"] == {"requests": {"remaining": 0, "reset_s": 360.0}}
    assert "openai" in out.stopped
    assert not {"failed", "unknown"} & set(out.ledger.states())


@pytest.mark.parametrize(
    ("case", "wait"), [("ratelimit_reset_1s", 1.0), ("ratelimit_reset_20ms", 0.02)]
)
async def test_ratelimit_reset_is_waited_out(zoo_world: MakeWorld, case: str, wait: float) -> None:
    """``x-ratelimit-reset-requests`` (a Go duration): the retry leaves after it and succeeds."""
    world = zoo_world(case)
    out = await world.run_case(jobs=1, deadline=QUICK)
    assert_paid_once(world, out)
    first, second = out.job_attempts("job-0")
    assert (first["outcome"], first["retry_after"]) == ("rate_limited", wait), briefs(out)
    assert second["outcome"] == "ok"
    assert out.seen[1].at - out.seen[0].at >= wait * 0.9


async def test_503_retry_after_beyond_the_deadline_stops_the_route(zoo_world: MakeWorld) -> None:
    """A 503 ``Retry-After: 86400`` (maintenance): the route stops, nothing is re-sent."""
    world = zoo_world("unavailable_day")
    out = await world.run_case(jobs=2, deadline=QUICK)
    assert_paid_once(world, out)
    assert len(out.seen) == 1, briefs(out)
    attempt = out.only_attempt("job-0")
    assert (attempt["http_status"], attempt["retry_after"]) == (503, 86400), briefs(out)
    assert "openai" in out.stopped
    assert not {"failed", "unknown"} & set(out.ledger.states())


async def test_a_200s_rate_limit_headers_are_kept_on_its_attempt(zoo_world: MakeWorld) -> None:
    """OpenAI's six headers on a 200 (limits, what is left, Go-duration resets): the attempt's
    row holds them by resource, the reset in seconds, and the image is kept."""
    world = zoo_world("ratelimit_headers_200")
    out = await world.run_case(jobs=1, deadline=QUICK)
    assert_paid_once(world, out)
    attempt = out.only_attempt("job-0")
    assert attempt["outcome"] == "ok"
    assert attempt["rate_limits"] == {
        "requests": {"limit": 500, "remaining": 499, "reset_s": 0.12},
        "tokens": {"limit": 30000, "remaining": 29000, "reset_s": 90.0},
    }
