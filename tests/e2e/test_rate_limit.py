"""Pacing against a provider that enforces its per-minute limit over short windows."""

from __future__ import annotations

import anyio
import pytest

from runner.sandbox import SandboxConfig

from .conftest import MakeWorld
from .harness import assert_log_matches_ledger, route_config

#: Wall-clock rates: run alone (scripts/test runs `serial` tests after the parallel pass).
pytestmark = pytest.mark.serial

ROUTE = "sandbox-laozhang"
#: The provider's limit (requests per minute per key): 20 per second.
RPM = 1200


def lines(n: int) -> list[dict[str, str]]:
    return [{"id": f"r{i}", "prompt": f"a tiny square, number {i}"} for i in range(n)]


@pytest.mark.anyio
async def test_configured_at_the_limit_no_429_and_full_speed(world: MakeWorld) -> None:
    """At the provider's rpm: not one 429, never faster than the limit, and not held back far
    past it (each request leaves after the one before it really left, so a loaded machine's
    delays add up: the bound above is loose)."""
    jobs = 200
    # The route's rpm from imagerun.toml this time (the other test uses `run --rpm`).
    w = world(SandboxConfig(rpm=RPM, tiny=True), config_text=route_config(**{ROUTE: {"rpm": RPM}}))
    batch = await w.submit(lines(jobs), ROUTE)

    with anyio.fail_after(3 * jobs / (RPM / 60)):
        result = await w.run([batch.id])

    assert result.report is not None
    assert result.report.clean
    seen = w.requests()
    assert [r.status for r in seen if r.status != 200] == []
    assert len(seen) == jobs
    span = (seen[-1].time - seen[0].time).total_seconds()
    ideal = jobs / (RPM / 60)
    assert 0.95 * ideal <= span <= 1.5 * ideal, f"{jobs} requests took {span:.2f}s, ideal {ideal}s"
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
