"""The database goes away under a remote batch: a real ``imagerun run`` on the Batch API route.

PostgreSQL is stopped for 5 s while the run's remote batch is polled, and while its result
lines are applied: the run rides it out (exit 0, every job done in the same run, one remote
batch on the sandbox, the ledger's total what the sandbox billed, nothing unknown). Kept down
past the outage limit, the run stops cleanly (exit 75) and the next run takes the same remote
batch up again: nothing lost, nothing bought twice.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runner.sandbox import Latency, SandboxConfig, SandboxHandle, running_sandbox
from tests.store.outages import PostgresServer, PrivatePostgres

from .conftest import ROUTE
from .invariants import sandbox_batches
from .test_kill import Runner

pytestmark = pytest.mark.timeout(240)

#: What an ``imagerun run`` that stopped for a database outage exits with (EX_TEMPFAIL).
EXIT_UNAVAILABLE = 75
#: How long the server stays down in the outages a run must ride out.
OUTAGE_S = 5.0


@pytest.fixture
def sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox(SandboxConfig()) as handle:
        yield handle


def _wait_for(
    proc: subprocess.Popen[bytes], runner: Runner, condition: Callable[[], bool], what: str
) -> None:
    """Wait (up to 120 s under load) until ``condition`` holds, the run still going."""
    deadline = time.monotonic() + 120
    while not condition():
        assert proc.poll() is None, runner.log.read_text()[-3000:]
        assert time.monotonic() < deadline, (f"never {what}", runner.remote())
        time.sleep(0.05)


def _polling(runner: Runner) -> bool:
    return any(r["step"] == "submitted" for r in runner.remote())


def _applying(runner: Runner) -> bool:
    return any(r["step"] == "applying" for r in runner.remote()) and runner.settled_lines() > 0


def _finished_at(attempt: dict[str, object]) -> datetime:
    at = attempt["finished_at"]
    assert isinstance(at, datetime)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _ride_out(
    runner: Runner, pg_server: PostgresServer, sandbox: SandboxHandle, jobs: int, when: str
) -> datetime:
    """One run; the server down for :data:`OUTAGE_S` once ``when`` holds; the run exits 0
    with every job done once. Returns when the outage began."""
    condition = _polling if when == "polling" else _applying
    # This session's turn is taken before the run starts: once ``when`` holds, no other test
    # session's outage delays the stop.
    with pg_server.turn():
        proc = runner.start()
        try:
            _wait_for(proc, runner, lambda: condition(runner), when)
            with pg_server.stopped() as outage:  # began: before the stop's first step
                time.sleep(OUTAGE_S)
            code = proc.wait(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    output = runner.log.read_text()
    assert code == 0, output[-3000:]
    assert "internal error" not in output
    runner.check(sandbox, jobs)  # every job succeeded, once; ledger total = sandbox's billed
    assert runner.ledger().unknown_jobs() == []
    assert len(sandbox_batches(sandbox.sandbox)) == 1, "a second remote batch for the same jobs"
    return outage.began


@pytest.mark.db_faults  # stops the server every other PostgreSQL test uses
def test_a_postgresql_restart_while_the_remote_batch_is_polled_is_ridden_out(
    tmp_path: Path, pg_url: str, pg_server: PostgresServer, sandbox: SandboxHandle
) -> None:
    # 16 lines one at a time at ~0.6 s each: the remote batch is at the provider throughout.
    config = SandboxConfig(batch_window=120.0, batch_concurrency=1, latency=Latency(mean=0.6))
    sandbox.sandbox.reset(config)
    runner = Runner(tmp_path, sandbox, pg_url)
    runner.submit(16, "outage-poll")

    began = _ride_out(runner, pg_server, sandbox, 16, "polling")

    # The outage came while the lines were at the provider: none was applied before it.
    assert all(_finished_at(a) > began for a in runner.ledger().attempts)


@pytest.mark.db_faults  # stops the server every other PostgreSQL test uses
def test_a_postgresql_restart_while_lines_are_applied_is_ridden_out(
    tmp_path: Path, pg_url: str, pg_server: PostgresServer, sandbox: SandboxHandle
) -> None:
    sandbox.sandbox.reset(SandboxConfig(batch_window=120.0, batch_concurrency=64))
    runner = Runner(tmp_path, sandbox, pg_url)
    # 800 lines are applied in four chunks: the outage lands among them.
    runner.submit(800, "outage-apply")

    began = _ride_out(runner, pg_server, sandbox, 800, "applying")

    # The outage came while the lines were applied: some were settled before it, the rest
    # once it had begun (their results waited in memory, or their reads waited it out).
    finished = [_finished_at(a) for a in runner.ledger().attempts]
    assert any(at < began for at in finished), "the outage came before any line was applied"
    assert any(at > began for at in finished), "the outage came after every line was applied"


# A cluster of its own (``private_pg``) goes down, not the shared server: not ``db_faults``.
def test_past_the_outage_limit_the_run_stops_and_the_next_resumes_its_remote_batches(
    tmp_path: Path, private_pg: PrivatePostgres, sandbox: SandboxHandle
) -> None:
    config = SandboxConfig(batch_window=120.0, batch_concurrency=1, latency=Latency(mean=0.6))
    sandbox.sandbox.reset(config)
    runner = Runner(tmp_path, sandbox, private_pg.url)
    runner.env["IMAGERUN_DB_OUTAGE_S"] = "3"
    # Two remote batches of 6 lines, polled at once: each one's driver meets the outage.
    (tmp_path / "imagerun.toml").write_text(f'[routes."{ROUTE}"]\nbatch_max_lines = 6\n')
    runner.submit(12, "outage-gone")

    first = runner.start()
    try:
        both = lambda: [r["step"] for r in runner.remote()] == ["submitted"] * 2  # noqa: E731
        _wait_for(first, runner, both, "both polled")
        private_pg.stop()
        try:
            code = first.wait(timeout=90)
        finally:
            private_pg.start()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=30)
    output = runner.log.read_text()
    assert code == EXIT_UNAVAILABLE, output[-3000:]
    assert "internal error" not in output
    assert "imagerun run" in output  # what to do, said where the run stopped
    steps = [r["step"] for r in runner.remote()]
    assert steps == ["submitted", "submitted"], "left where the next run takes them up"
    status = runner.cli("status", "outage-gone")
    assert status.returncode == 0, status.stderr
    said = " ".join(status.stdout.split())
    assert "2 remote batch(es) with no run driving them" in said, status.stdout
    assert "`imagerun run outage-gone`" in said  # the next step, named

    runner.finish()  # the next run takes the remote batches up and applies them
    runner.check(sandbox, 12)
    assert runner.ledger().unknown_jobs() == []
    assert len(sandbox_batches(sandbox.sandbox)) == 2, "a second remote batch for the same jobs"
