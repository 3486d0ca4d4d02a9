"""The progress line: a route's pause of more than a few seconds shows, with what is left of
it and why."""

from __future__ import annotations

import anyio
import pytest

from runner.cli.progress import PAUSE_SHOWN_S, describe
from runner.models import JobState, Outcome
from runner.run.gate import RouteGate
from runner.run.stats import JobSettled, RoutePause, RunStats

NOW = 1000.0


def paused_stats(route: str, seconds: float, reason: str, *, now: float = NOW) -> RunStats:
    stats = RunStats(started=now - 10, total=10)
    stats.record(
        JobSettled(
            route=route,
            state=JobState.WAITING,
            outcome=Outcome.RATE_LIMITED,
            paused=RoutePause(until=now + seconds, reason=reason),
        )
    )
    return stats


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(42.2, "paused 42s"), (245.0, "paused 4m05s"), (86400.0, "paused 24h00m")],
)
def test_a_pause_shows_what_is_left_of_it_and_why(seconds: float, shown: str) -> None:
    line = describe(paused_stats("openai", seconds, "429 Retry-After"), NOW)
    assert f"{shown} (429 Retry-After)" in line, line


def test_a_pause_of_a_few_seconds_or_one_that_ended_is_not_shown() -> None:
    stats = paused_stats("openai", PAUSE_SHOWN_S, "429 backoff")
    assert "paused" not in describe(stats, NOW)
    assert "paused 9s" in describe(stats, NOW - 6)
    assert "paused" not in describe(stats, NOW + 60)


def test_the_longest_pause_a_route_was_given_is_the_one_shown() -> None:
    stats = paused_stats("openai", 60.0, "503 Retry-After")
    stats.record(
        JobSettled(
            route="openai",
            state=JobState.WAITING,
            paused=RoutePause(until=NOW + 5, reason="429 backoff"),
        )
    )
    assert "paused 60s (503 Retry-After)" in describe(stats, NOW)


@pytest.mark.anyio
async def test_with_several_routes_the_pause_names_its_route() -> None:
    now = anyio.current_time()
    stats = paused_stats("laozhang", 30.0, "429 rate-limit reset", now=now)
    stats.gates = {"openai": RouteGate(60), "laozhang": RouteGate(60)}
    assert "laozhang paused 30s (429 rate-limit reset)" in describe(stats, now)


@pytest.mark.anyio
async def test_a_pause_another_worker_gave_the_route_shows_too() -> None:
    """On a shared gate a pause may come from another worker's 429: the gate knows of it."""
    gate = RouteGate(60)
    await gate.pause(30.0)
    stats = RunStats(started=anyio.current_time(), total=1, gates={"openai": gate})
    assert "paused 30s (another worker's 429)" in describe(stats, anyio.current_time())
