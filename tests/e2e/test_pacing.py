"""Adaptive pacing against the sandbox's limiters: told too much, the run converges on the
provider's real limit (from its headers, or from its 429s), and the next run starts there."""

from __future__ import annotations

import anyio
import pytest

from runner import app
from runner.sandbox import SandboxConfig

from .conftest import MakeWorld

#: Wall-clock rates: kept out of the parallel pass (scripts/test runs `serial` tests after it).
pytestmark = pytest.mark.serial

ROUTE = "sandbox-openai"
#: The provider's limit: 10 requests a second.
RPM = 600
JOBS = 160
#: The requests after which the pace must have found the limit: from the headers at once,
#: from 429s alone after a few backoffs (about eight seconds here).
SETTLED = {True: 40, False: 80}


def lines(n: int) -> list[dict[str, str]]:
    return [{"id": f"p{i}", "prompt": f"a tiny square, number {i}"} for i in range(n)]


@pytest.mark.anyio
@pytest.mark.parametrize("headers", [True, False], ids=["headers", "no-headers"])
@pytest.mark.parametrize("limiter", ["strict", "bucket"])
async def test_told_three_times_too_much_the_run_converges(
    world: MakeWorld, limiter: str, headers: bool
) -> None:
    """Every job done; after the first requests only a handful more 429s."""
    config = SandboxConfig(rpm=RPM, tiny=True, limiter=limiter, limit_headers=headers)  # type: ignore[arg-type]
    w = world(config)
    batch = await w.submit(lines(JOBS), ROUTE)

    with anyio.fail_after(60):
        result = await w.run([batch.id], rpm=3 * RPM)

    assert result.report is not None
    assert (await w.rows(batch)).states() == {"succeeded": JOBS}
    seen = w.requests()
    late = [r for r in seen[SETTLED[headers] :] if r.status == 429]
    assert len(late) <= 6, f"{len(late)} 429s after the first {SETTLED[headers]}"


@pytest.mark.anyio
async def test_the_learned_limit_is_in_status_and_the_next_run_starts_from_it(
    world: MakeWorld,
) -> None:
    w = world(SandboxConfig(rpm=RPM, tiny=True))
    batch = await w.submit(lines(20), ROUTE)
    with anyio.fail_after(30):
        await w.run([batch.id])

    status = await app.status(w.settings())
    assert status.paces[ROUTE]["requests"] == RPM
    assert status.paces[ROUTE]["reason"] in ("from headers", "at the ceiling")
