"""A remote batch that cannot be collected, and what a run counts and shows for one.

Once a remote batch may exist at the provider, its lines may have run and been paid: an error
that does not pass (its output file gone, looking for it refused) never closes them as not
charged. Reading it is tried a few times in a row, for a while (a read that succeeds starts
the count again), then it is given up as ``uncollected``: its lines
held as ``unknown`` with their charge unknown, never re-sent by themselves, the run ending
with a message and a non-zero exit, ``imagerun status`` showing it.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import pytest
from sqlalchemy.exc import IntegrityError

from runner import app
from runner.cli.batch_status import remote_table
from runner.cli.progress import describe
from runner.models import JobState, RemoteStep
from runner.remote import lifecycle
from runner.run.worker import Runner, RunOptions
from runner.sandbox import Latency, SandboxConfig
from runner.store import BatchInfo
from tests.e2e.harness import World

from .conftest import ROUTE, MakeWorld
from .invariants import sandbox_batches
from .test_driver import prompts, remote_rows

pytestmark = pytest.mark.anyio

BASE_URL_VAR = "IMAGERUN_ROUTE_SANDBOX_OPENAI_BATCH_BASE_URL"


class _Refusing(BaseHTTPRequestHandler):
    """Every call answers 400 invalid_request_error (a proxy that does not serve the list)."""

    def _refuse(self) -> None:
        body = json.dumps(
            {"error": {"message": "not served here", "type": "invalid_request_error"}}
        ).encode()
        self.send_response(400)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _refuse

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def refusing_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


#: How long the tests try failing reads before giving up (a run's default is ten minutes).
SPAN = 2.0


async def test_an_output_file_that_is_gone_is_given_up_and_its_lines_held(
    world: MakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The output file answers 404 on every try: the run ends (it does not loop), the lines
    are held unknown with their charge unknown, and nothing is sent again."""
    monkeypatch.setattr(lifecycle, "COLLECT_SPAN", SPAN)
    w = world(SandboxConfig(batch_window=20.0))
    batch = await w.submit(prompts(4), ROUTE)
    sandbox = w.handle.sandbox
    removed: list[str] = []

    async def remove_outputs() -> None:
        # The provider lost the file: every download of it answers 404.
        while True:
            for rb in sandbox_batches(sandbox):
                if rb.output_file_id and sandbox.uploads.delete(rb.output_file_id):
                    removed.append(rb.output_file_id)
            await anyio.sleep(0.001)

    async with anyio.create_task_group() as group:
        group.start_soon(remove_outputs)
        with anyio.fail_after(60):
            result = await w.run()
        group.cancel_scope.cancel()

    assert removed, "the output file was downloaded before the test removed it"
    assert result.report is not None
    assert not result.report.clean, "the run must not end as if all went well"
    (why,) = result.report.stats.uncollected.values()
    tried = re.search(r"could not be read (\d+) times in a row over (\d+) s", why)
    assert tried is not None, why
    assert int(tried[1]) >= lifecycle.COLLECT_TRIES
    assert int(tried[2]) >= SPAN - 0.5, "given up before it was tried for long enough"
    assert "retry BATCH --unknown" in why
    ledger = await w.rows(batch)
    assert ledger.states() == {JobState.UNKNOWN.value: 4}
    assert {(a["outcome"], a["charge_status"]) for a in ledger.attempts} == {("lost", "unknown")}
    (rb,) = await remote_rows(w, batch)
    assert rb.step is RemoteStep.UNCOLLECTED
    status = await app.status(w.settings(), [batch.id])
    (shown,) = status.remote_batches
    table = remote_table([shown], names={batch.id: batch.name})
    assert "uncollected" in "".join(str(c) for c in table.columns[2].cells)

    again = await w.run()
    assert again.nothing_to_do, "held lines are never re-sent by themselves"
    assert len(sandbox_batches(sandbox)) == 1


async def test_a_lookup_refused_on_resume_holds_the_lines_instead_of_closing_them(
    world: MakeWorld, refusing_url: str
) -> None:
    """Stopped while the remote batch was being created (it exists at the provider), the
    next run cannot look it up: its lines may run and be paid, so they are held unknown,
    not closed as never run, and no second remote batch is created."""
    w = world(SandboxConfig(batch_window=20.0, batch_create_delay=30.0))
    batch = await w.submit(prompts(3), ROUTE)
    sandbox = w.handle.sandbox
    runners: list[Runner] = []
    options = RunOptions(retry_scale=0.0, handle_signals=False, grace_seconds=0.0)
    async with anyio.create_task_group() as group:
        group.start_soon(partial(app.run, w.settings(), [], options, on_start=runners.append))
        with anyio.fail_after(30):
            while not sandbox_batches(sandbox):
                await anyio.sleep(0.02)
        # Stopped, and its grace over, while POST /batches is unanswered.
        runners[0].request_stop()
        runners[0]._work_scope.cancel()
    (rb,) = await remote_rows(w, batch)
    assert (rb.step, rb.remote_id) == (RemoteStep.UPLOADED, None)

    refused = replace(w, env={**w.env, BASE_URL_VAR: refusing_url})
    with anyio.fail_after(60):
        result = await refused.run()

    assert result.report is not None
    assert not result.report.clean
    ledger = await w.rows(batch)
    assert ledger.states() == {JobState.UNKNOWN.value: 3}
    assert {a["charge_status"] for a in ledger.attempts} == {"unknown"}
    (rb,) = await remote_rows(w, batch)
    assert rb.step is RemoteStep.UNCOLLECTED
    assert rb.error is not None
    assert "looking for it on the provider failed" in rb.error
    assert f"imagerun_remote_batch={rb.id}" in rb.error
    assert len(sandbox_batches(sandbox)) == 1


async def test_a_failed_open_gives_back_what_it_reserved(world: MakeWorld) -> None:
    """The database refuses the remote batch's row: the run's budget holds nothing for
    lines that never became a remote batch."""
    w = world()
    batch = await w.submit(prompts(3), ROUTE)
    async with app.open_store(w.settings()):
        pass  # the schema is in place
    db = w.db_url.removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON remote_batches "
            "BEGIN SELECT RAISE(ABORT, 'the disk is full'); END"
        )
    runners: list[Runner] = []
    options = RunOptions(retry_scale=0.0, handle_signals=False, budget_usd=5.0)

    with pytest.raises(ExceptionGroup) as raised:
        await app.run(w.settings(), [batch.id], options, on_start=runners.append)

    assert raised.group_contains(IntegrityError, match="the disk is full")

    spending = runners[0]._jobs.spending
    assert spending.cap is not None
    assert spending.cap.reserved_usd == 0.0
    assert (await w.rows(batch)).states() == {JobState.QUEUED.value: 3}


async def test_lines_count_as_requests_and_the_progress_line_shows_no_pace(
    world: MakeWorld,
) -> None:
    w = world(SandboxConfig(batch_window=20.0, batch_concurrency=1, latency=Latency(mean=0.2)))
    await w.submit(prompts(5), ROUTE)
    runners: list[Runner] = []
    options = RunOptions(retry_scale=0.0, handle_signals=False)
    lines: list[str] = []

    async def watch() -> None:
        while True:
            if runners and runners[0].stats.remote:
                lines.append(describe(runners[0].stats, anyio.current_time()))
            await anyio.sleep(0.05)

    async with anyio.create_task_group() as group:
        group.start_soon(watch)
        with anyio.fail_after(60):
            result = await app.run(w.settings(), [], options, on_start=runners.append)
        group.cancel_scope.cancel()

    assert result.report is not None
    assert result.report.clean
    assert result.report.stats.attempts == 5
    assert result.report.stats.outcomes == {"ok": 5}
    assert lines, "the progress line never showed the remote batch"
    assert not any("pace" in line for line in lines), lines[-1]


async def _collected_once(w: World, batch: BatchInfo, lines: int) -> None:
    """One remote batch, done, its failed reads forgotten; every job succeeded, with one ok
    attempt and one image."""
    (rb,) = await remote_rows(w, batch)
    assert (rb.step, rb.collect_failures) == (RemoteStep.DONE, 0)
    assert len(sandbox_batches(w.handle.sandbox)) == 1
    ledger = await w.rows(batch)
    assert ledger.states() == {JobState.SUCCEEDED.value: lines}
    assert sorted(a["outcome"] for a in ledger.attempts) == ["ok"] * lines
    assert len(ledger.outputs) == lines


async def test_reads_that_fail_now_and_then_never_give_the_remote_batch_up(
    world: MakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every other poll of the remote batch answers 404: more failures than the tries allowed,
    but never two in a row. It is collected, every line applied, as if none had failed, and
    each failure is tried again one poll interval later (the wait doubles only while
    failures come in a row)."""
    monkeypatch.setattr(lifecycle, "COLLECT_SPAN", 0.0)
    w = world(SandboxConfig(batch_window=30.0, batch_concurrency=1, latency=Latency(mean=1.5)))
    batch = await w.submit(prompts(4), ROUTE)
    registry = w.handle.sandbox.batches
    found = registry.get
    polls: list[bool] = []
    times: list[float] = []

    def every_other(batch_id: str) -> Any:
        # The sandbox answers 404 when the batch is not found.
        polls.append(len(polls) % 2 == 1 or polls.count(False) >= 6)
        times.append(time.monotonic())
        return found(batch_id) if polls[-1] else None

    monkeypatch.setattr(registry, "get", every_other)
    with anyio.fail_after(90):
        result = await w.run()

    assert polls.count(False) >= lifecycle.COLLECT_TRIES, polls
    assert result.report is not None
    assert result.report.clean, (polls, result.report.stats.uncollected)
    await _collected_once(w, batch, 4)
    # After the sixth failure a doubling that was never reset would wait 32 poll intervals.
    interval = 0.2  # the sandbox routes' poll interval
    gaps = zip(times[:-1], times[1:], polls[:-1], strict=True)
    retried_after = [b - a for a, b, ok in gaps if not ok]
    assert len(retried_after) >= 5, polls
    assert max(retried_after) < 8 * interval, retried_after


async def test_an_output_file_not_yet_readable_is_waited_for(
    world: MakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The output file answers 404 for its first seconds (the provider still writing it):
    the tries allowed pass quickly, yet it is read once it is there."""
    monkeypatch.setattr(lifecycle, "COLLECT_SPAN", 3 * SPAN)
    w = world(SandboxConfig(batch_window=20.0))
    batch = await w.submit(prompts(4), ROUTE)
    sandbox = w.handle.sandbox
    found = sandbox.uploads.get
    refused: list[float] = []

    def late(file_id: str) -> Any:
        outputs = {b.output_file_id for b in sandbox_batches(sandbox)}
        if file_id in outputs and (not refused or time.monotonic() - refused[0] < SPAN):
            refused.append(time.monotonic())
            return None  # answered 404
        return found(file_id)

    monkeypatch.setattr(sandbox.uploads, "get", late)
    with anyio.fail_after(90):
        result = await w.run()

    assert len(refused) >= lifecycle.COLLECT_TRIES, refused
    assert result.report is not None
    assert result.report.clean, (refused, result.report.stats.uncollected)
    await _collected_once(w, batch, 4)


class _Stopped(Exception):
    """The process ended right after the last line was applied (a kill, in effect)."""


async def test_a_remote_batch_stopped_after_its_last_line_is_finished_by_the_next_run(
    world: MakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every line applied (every job succeeded), then the run ended before the remote batch
    was finished: the next run is not 'nothing to do', it deletes what we uploaded and marks
    the remote batch done."""
    w = world(SandboxConfig(batch_window=20.0))
    batch = await w.submit(prompts(3), ROUTE)
    finish = lifecycle.Lifecycle._finish

    async def stopped(self: lifecycle.Lifecycle, rb: Any) -> Any:
        raise _Stopped

    monkeypatch.setattr(lifecycle.Lifecycle, "_finish", stopped)
    with pytest.raises(BaseException) as raised:
        await w.run()
    assert (
        raised.group_contains(_Stopped)
        if isinstance(raised.value, BaseExceptionGroup)
        else (isinstance(raised.value, _Stopped))
    )
    assert (await w.rows(batch)).states() == {JobState.SUCCEEDED.value: 3}
    (rb,) = await remote_rows(w, batch)
    assert rb.step is RemoteStep.APPLYING

    monkeypatch.setattr(lifecycle.Lifecycle, "_finish", finish)
    again = await w.run()

    assert not again.nothing_to_do
    await _collected_once(w, batch, 3)
    uploads = [f.filename for f in w.handle.sandbox.uploads if f.filename.startswith("imagerun-")]
    assert uploads == []
