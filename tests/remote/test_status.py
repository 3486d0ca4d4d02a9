"""``imagerun status`` and the run's progress line show remote batches while they wait."""

from __future__ import annotations

import anyio
import pytest

from runner import app
from runner.cli.batch_status import remote_table, status_json
from runner.cli.progress import describe
from runner.models import JobState
from runner.run.worker import Runner, RunOptions
from runner.sandbox import Latency, SandboxConfig

from .conftest import ROUTE, MakeWorld
from .invariants import sandbox_batches
from .test_driver import checked, prompts

pytestmark = pytest.mark.anyio


async def test_status_and_progress_show_a_waiting_remote_batch(world: MakeWorld) -> None:
    w = world(SandboxConfig(batch_window=60.0, batch_concurrency=1, latency=Latency(mean=0.2)))
    batch = await w.submit(prompts(6), ROUTE)
    runners: list[Runner] = []
    options = RunOptions(retry_scale=0.0, handle_signals=False)

    results: list[app.RunResult] = []

    async def run() -> None:
        results.append(await app.run(w.settings(), [], options, on_start=runners.append))

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        with anyio.fail_after(30):
            while not any(b.completed for b in sandbox_batches(w.handle.sandbox)):
                await anyio.sleep(0.05)
        report = await app.status(w.settings(), [batch.id])
        line = describe(runners[0].stats, anyio.current_time())
        runners[0].request_stop()

    (stopped,) = results
    assert stopped.report is not None
    assert stopped.report.in_remote_batches > 0, "the summary says jobs wait at the provider"
    (rb,) = report.remote_batches
    assert rb.status in ("in_progress", "finalizing")
    assert rb.line_count == 6
    assert f"{rb.id} " in line
    assert "/6" in line
    (shown,) = status_json(report)["remote_batches"]
    assert (shown["id"], shown["lines"], shown["remote_id"]) == (rb.id, 6, rb.remote_id)
    table = remote_table(report.remote_batches, names={batch.id: batch.name})
    assert table.row_count == 1
    # The jobs wait in the remote batch; the next run takes it up where it was.
    counts = (await app.status(w.settings(), [batch.id])).batches[0].counts
    assert counts.get(JobState.RUNNING, 0) + counts.get(JobState.SUCCEEDED, 0) == 6
    await w.run()
    assert (await w.rows(batch)).states() == {JobState.SUCCEEDED.value: 6}
    (done,) = await checked(w, batch)
    assert done.id == rb.id
