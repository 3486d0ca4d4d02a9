"""Pacing against a provider that enforces its per-minute limit over short windows."""

from __future__ import annotations

import anyio
import pytest

from runner.run.pace_state import Reason
from runner.sandbox import SandboxConfig

from .conftest import MakeWorld
from .harness import assert_log_matches_ledger, route_config

#: Wall-clock rates: kept out of the parallel pass (scripts/test runs `serial` tests after it).
pytestmark = pytest.mark.serial

ROUTE = "sandbox-laozhang"
#: The provider's limit (requests per minute per key): 20 per second.
RPM = 1200
#: Requests over which a pace told three times the limit learns it: four backoffs, each a few
#: 429s (measured: episodes at requests 31, 69, 105 and 149 of 400, none after).
LEARNING = 200
#: 429s allowed after that: the pace probes just past the limit now and then.
HANDFUL = 5


def lines(n: int) -> list[dict[str, str]]:
    return [{"id": f"r{i}", "prompt": f"a tiny square, number {i}"} for i in range(n)]


@pytest.mark.anyio
async def test_configured_at_the_limit_no_429_and_no_backoff(world: MakeWorld) -> None:
    """At the provider's rpm: not one 429, never faster than the limit, and the pace stays at
    the rate given to the end (how long the run takes says more about the machine's load
    than about the pacing, and is not asserted)."""
    jobs = 200
    # The route's rpm from imagerun.toml this time (the other test uses `run --rpm`).
    w = world(SandboxConfig(rpm=RPM, tiny=True), config_text=route_config(**{ROUTE: {"rpm": RPM}}))
    batch = await w.submit(lines(jobs), ROUTE)

    with anyio.fail_after(10 * jobs / (RPM / 60)):
        result = await w.run([batch.id])

    assert result.report is not None
    assert result.report.clean
    seen = w.requests()
    assert [r.status for r in seen if r.status != 200] == []
    assert len(seen) == jobs
    span = (seen[-1].time - seen[0].time).total_seconds()
    ideal = jobs / (RPM / 60)
    assert span >= 0.95 * ideal, f"{jobs} requests in {span:.2f}s: faster than the limit"
    pace = result.report.stats.gates[ROUTE].pace
    assert (pace.rpm, pace.reason) == (RPM, Reason.CONFIGURED)
    ledger = await w.rows(batch)
    assert ledger.states() == {"succeeded": jobs}
    assert_log_matches_ledger(ledger, seen)


@pytest.mark.anyio
async def test_told_three_times_the_limit_the_pace_converges_under_it(world: MakeWorld) -> None:
    """Told three times the provider's rate, with no rate-limit headers to say better: the
    first 429s teach the pace, and after the first LEARNING requests only a handful more
    come, whatever the machine's load."""
    jobs = 400  # 20 s at the limit
    w = world(SandboxConfig(rpm=RPM, tiny=True))
    batch = await w.submit(lines(jobs), ROUTE)

    with anyio.fail_after(10 * jobs / (RPM / 60)):
        result = await w.run([batch.id], rpm=3 * RPM)

    assert result.report is not None
    assert result.report.clean
    seen = w.requests()
    refused = [k for k, r in enumerate(seen) if r.status == 429]
    assert refused, "the provider never pushed back: the test did not overdrive it"
    late = [k for k in refused if k >= LEARNING]
    assert len(late) <= HANDFUL, f"429s at requests {refused}"
    # Learned from the 429s and under the rate given. Not bounded nearer the limit: a client
    # held back by its machine sees no 429 and probes on, which says nothing of the limit.
    pace = result.report.stats.gates[ROUTE].pace
    assert pace.reason is Reason.BACKED_OFF
    assert pace.rpm < 3 * RPM, pace.rpm
    ledger = await w.rows(batch)
    assert ledger.states() == {"succeeded": jobs}
    assert_log_matches_ledger(ledger, seen)


@pytest.mark.anyio
async def test_configured_above_the_limit_429s_are_absorbed(world: MakeWorld) -> None:
    """At five times the provider's rpm: 429s happen, each is retried, every job succeeds."""
    jobs = 100
    w = world(SandboxConfig(rpm=RPM, tiny=True))
    batch = await w.submit(lines(jobs), ROUTE)

    with anyio.fail_after(30):
        result = await w.run([batch.id], rpm=5 * RPM)

    assert result.report is not None
    assert result.report.clean
    seen = w.requests()
    refused = [r for r in seen if r.status == 429]
    assert refused, "the provider never pushed back: the test did not overdrive it"
    assert {r.status for r in seen} == {200, 429}
    ledger = await w.rows(batch)
    assert ledger.states() == {"succeeded": jobs}
    assert len(ledger.attempts) == jobs + len(refused)
    rate_limited = [a for a in ledger.attempts if a["outcome"] == "rate_limited"]
    assert len(rate_limited) == len(refused)
    assert all(a["charge_status"] == "not_charged" for a in rate_limited)
    assert_log_matches_ledger(ledger, seen)
    # Only successes were paid for.
    assert w.handle.sandbox.charged_usd() == pytest.approx(0.03 * jobs)
