"""A graceful stop (the first Ctrl-C or SIGTERM): the jobs claimed ahead go back to the queue.

A lane claims well ahead of what it has in flight (64 jobs for 2 requests here). On the stop,
those not started are handed back at once, not left ``running`` until their lease runs out:
not while the requests in flight finish, and not when the grace runs out before they do.
"""

from __future__ import annotations

from collections import Counter

import anyio
import pytest

from runner import app
from runner.run.worker import Runner, RunOptions
from runner.sandbox import Latency, SandboxConfig

from .conftest import MakeWorld
from .harness import RUN_DEADLINE, World

pytestmark = pytest.mark.anyio

JOBS = 40
CONCURRENCY = 2
#: Each request takes this long, far longer than the grace: the grace runs out first.
LATENCY = 5.0
GRACE = 1.0


async def job_states(w: World) -> Counter[str]:
    async with app.open_store(w.settings()) as store:
        counts = await store.count_states([b.id for b in await store.list_batches()])
    return Counter({state.value: n for state, n in counts.items() if n})


async def test_a_graceful_stop_hands_back_every_job_not_started(world: MakeWorld) -> None:
    w = world(SandboxConfig(tiny=True, latency=Latency(mean=LATENCY)))
    lines = [{"id": f"s{i}", "prompt": f"a quiet harbour, take {i}"} for i in range(JOBS)]
    batch = await w.submit(lines, "sandbox-openai")
    started: list[Runner] = []
    options = RunOptions(
        concurrency=CONCURRENCY, grace_seconds=GRACE, retry_scale=0.0, handle_signals=False
    )
    during: Counter[str] = Counter()

    async def stop_once_in_flight() -> None:
        while not started or started[0].stats.in_flight < CONCURRENCY:
            await anyio.sleep(0.01)
        started[0].request_stop()
        # The requests in flight have seconds to go: every other job is back in the queue now.
        while (states := await job_states(w))["running"] > CONCURRENCY:
            await anyio.sleep(0.05)
        during.update(states)

    with anyio.fail_after(RUN_DEADLINE):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_once_in_flight)
            result = await app.run(w.settings(), [batch.id], options, on_start=started.append)

    assert result.report is not None
    assert started[0].stats.attempts == CONCURRENCY
    assert during == {"running": CONCURRENCY, "queued": JOBS - CONCURRENCY}
    after = await job_states(w)
    assert after["running"] == 0, after
    assert after["queued"] == JOBS - CONCURRENCY, after
    assert len(w.requests()) <= CONCURRENCY
