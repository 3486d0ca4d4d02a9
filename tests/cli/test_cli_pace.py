"""The pace on the progress line (how fast, and why) and each route's learned limit in
``status``."""

from __future__ import annotations

import anyio
import pytest
from rich.console import Console

from runner.cli.batch_status import paces_table
from runner.cli.progress import describe
from runner.models import Limit, RateLimits
from runner.run.gate import RATE_MARGIN, RouteGate
from runner.run.pace_state import Learned, Observation, Reason
from runner.run.pacing import HEADER_SHARE
from runner.run.stats import RunStats

pytestmark = pytest.mark.anyio


def rendered(table: object) -> str:
    console = Console(width=160, record=True)
    console.print(table)
    return console.export_text()


async def test_the_progress_line_shows_the_pace_and_why() -> None:
    stats = RunStats(started=0.0, total=10)
    gate = RouteGate(900)
    stats.gates["openai"] = gate
    assert f"pace {900 * RATE_MARGIN:.0f}/min (configured)" in describe(stats, 1.0)
    limits = RateLimits(requests=Limit(limit=300))
    await gate.observe(Observation(at=anyio.current_time(), rate_limited=False, limits=limits))
    assert f"pace {300 * HEADER_SHARE:.0f}/min (from headers)" in describe(stats, 2.0)
    await gate.observe(Observation(at=anyio.current_time() + 5, rate_limited=True))
    assert "(backed off after a 429)" in describe(stats, 3.0)


async def test_two_routes_are_named_on_the_progress_line() -> None:
    stats = RunStats(started=0.0, total=10)
    stats.gates["a"] = RouteGate(60)
    stats.gates["b"] = RouteGate(120)
    line = describe(stats, 1.0)
    assert f"a pace {60 * RATE_MARGIN:.0f}/min" in line
    assert f"b pace {120 * RATE_MARGIN:.0f}/min" in line


async def test_status_lists_each_routes_learned_limit() -> None:
    learned = Learned(rpm=297.0, reason=Reason.HEADERS, requests=300, images=5)
    text = rendered(
        paces_table({"openai": {**learned.to_json(), "learned_at": "2026-12-02T04:00:00+00:00"}})
    )
    assert "openai" in text
    assert "300 req/min, 5 img/min" in text
    assert "from headers" in text
    # No headers ever came: the pace the 429s taught stands in for the limit.
    probed = Learned(rpm=250.0, reason=Reason.BACKED_OFF, refused_rpm=280.0)
    assert "~250 req/min (backed off after a 429)" in rendered(
        paces_table({"gateway": probed.to_json()})
    )
