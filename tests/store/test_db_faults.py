"""The database may go away: a run outlasts a PostgreSQL restart and a locked SQLite file.

Each test runs a real ``imagerun run`` process against the sandbox (a real HTTP server) and
takes its database away mid-run: PostgreSQL stopped for 5 s, or SQLite held under
``BEGIN EXCLUSIVE`` by another process past the busy timeout. Requests in flight finish and
their results wait in memory; no request leaves without its ledger row; afterwards every job
is done exactly once and the ledger holds exactly the requests the sandbox saw.
Past the outage limit the run stops cleanly (exit 75), and the next run finishes the batch
without paying for anything twice.

Only the test that stops the local server every other PostgreSQL test uses is ``db_faults``
(run alone, after the parallel pass); the others take away a database of their own (a SQLite
file, a private cluster) and share the machine like any other test.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.sandbox import Latency, SandboxConfig, SandboxHandle, running_sandbox
from tests.scale.cluster import wait_until
from tests.scale.ledger import assert_each_job_once, check_outputs, read_ledger

from .outages import (
    FaultCluster,
    PostgresServer,
    PrivatePostgres,
    sqlite_locked,
)

JOBS = 120
RUN = ("--concurrency", "8", "--rpm", "60000")
#: What an ``imagerun run`` that stopped for a database outage exits with (EX_TEMPFAIL).
EXIT_UNAVAILABLE = 75


@pytest.fixture
def sandbox() -> Iterator[SandboxHandle]:
    """150-250 ms per request: enough requests in flight when the database goes."""
    config = SandboxConfig(latency=Latency(mean=0.2, jitter=0.05), tiny=True, seed=14)
    with running_sandbox(config) as handle:
        yield handle


def _started(cluster: FaultCluster, at_least: int) -> None:
    wait_until(lambda: len(cluster.requests()) >= at_least, f"{at_least} requests to arrive")


def _assert_all_done_once(cluster: FaultCluster, data: list[Path]) -> None:
    ledger = read_ledger(cluster.db_url)
    assert len(ledger.jobs) == JOBS
    assert_each_job_once(ledger, cluster.requests())
    assert check_outputs(ledger, data) == {}, "an image on disk is not recorded"


@pytest.mark.db_faults  # stops the server every other PostgreSQL test uses
@pytest.mark.timeout(120)
def test_a_run_outlasts_a_postgresql_restart(
    tmp_path: Path, pg_url: str, pg_server: PostgresServer, sandbox: SandboxHandle
) -> None:
    """PostgreSQL stopped for 5 s mid-run: exit 0, every job done once, ledger = requests seen."""
    cluster = FaultCluster(tmp_path, pg_url, sandbox)
    cluster.submit("restart", JOBS)
    try:
        worker = cluster.start(*RUN)
        _started(cluster, 24)
        with pg_server.down() as outage:
            sent = len(cluster.requests())
            time.sleep(5.0)
            # No request leaves while its start row cannot be written: what was in flight
            # when the server went (at most the concurrency) is all that arrives meanwhile.
            assert len(cluster.requests()) - sent <= 8
        code = worker.finish()
    finally:
        cluster.stop_all()
    output = worker.output()
    assert outage.seconds >= 5.0
    assert code == 0, output[-3000:]
    _assert_all_done_once(cluster, [worker.data])


@pytest.mark.timeout(120)
def test_a_run_waits_for_a_sqlite_file_locked_past_its_busy_timeout(
    tmp_path: Path, sandbox: SandboxHandle
) -> None:
    """Another process holds the SQLite file 4 s, the busy timeout is 0.5 s: the run waits."""
    db = tmp_path / "imagerun.db"
    cluster = FaultCluster(
        tmp_path, f"sqlite:///{db}", sandbox, extra={"IMAGERUN_SQLITE_BUSY_S": "0.5"}
    )
    cluster.submit("locked", JOBS)
    try:
        worker = cluster.start(*RUN)
        _started(cluster, 24)
        with sqlite_locked(db, 4.0):
            sent = len(cluster.requests())
            time.sleep(3.0)
            assert len(cluster.requests()) - sent <= 8
        code = worker.finish()
    finally:
        cluster.stop_all()
    assert code == 0, worker.output()[-3000:]
    _assert_all_done_once(cluster, [worker.data])


@pytest.mark.timeout(120)
def test_past_the_outage_limit_the_run_stops_cleanly_and_the_next_run_finishes(
    tmp_path: Path, sandbox: SandboxHandle
) -> None:
    """Locked longer than the limit: exit 75 and a hint; nothing lost, nothing paid twice."""
    db = tmp_path / "imagerun.db"
    knobs = {"IMAGERUN_SQLITE_BUSY_S": "0.25", "IMAGERUN_DB_OUTAGE_S": "1.5"}
    cluster = FaultCluster(tmp_path, f"sqlite:///{db}", sandbox, extra=knobs)
    cluster.submit("gone", JOBS)
    try:
        first = cluster.start(*RUN)
        _started(cluster, 24)
        with sqlite_locked(db, 30.0) as locker:
            code = first.process.wait(timeout=30)
            sent = len(cluster.requests())
            locker.terminate()  # held until the run has stopped, however long that took
        assert code == EXIT_UNAVAILABLE, first.output()[-3000:]
        assert "imagerun run" in first.output()  # what to do, said where the run stopped
        assert sent < JOBS
        status = cluster.cli("status", "gone")
        assert status.returncode == 0, status.stderr
        assert "imagerun" in status.stdout  # the next step, named
        # Nothing lost: the next run records the images the first left on disk, sends only
        # what never left, and every job ends done once.
        second = cluster.start_again(first, *RUN)
        assert second.finish() == 0, second.output()[-3000:]
    finally:
        cluster.stop_all()
    _assert_all_done_once(cluster, [first.data])


@pytest.mark.timeout(120)
def test_past_the_outage_limit_on_postgresql_nothing_is_lost(
    tmp_path: Path, private_pg: PrivatePostgres, sandbox: SandboxHandle
) -> None:
    """The server stays down past a 3 s limit: exit 75; the next run pays for nothing twice.

    Answers that came in while the server was down are on disk; the next run records them
    (adopted, not resent) and sends only what never left.
    """
    cluster = FaultCluster(tmp_path, private_pg.url, sandbox, extra={"IMAGERUN_DB_OUTAGE_S": "3"})
    cluster.submit("gone-pg", JOBS)
    try:
        first = cluster.start(*RUN)
        _started(cluster, 24)
        private_pg.stop()
        try:
            code = first.process.wait(timeout=60)
        finally:
            private_pg.start()
        assert code == EXIT_UNAVAILABLE, first.output()[-3000:]
        second = cluster.start_again(first, *RUN)
        assert second.finish() == 0, second.output()[-3000:]
    finally:
        cluster.stop_all()
    _assert_all_done_once(cluster, [first.data])
