"""Several worker processes on one SQLite file: safe, but each keeps its own rate limit.

Every writer takes SQLite's write lock with ``BEGIN IMMEDIATE`` and a busy timeout, so two
``imagerun run`` processes on one file share the queue without losing or doubling a job. The
request schedule, though, lives in each process (only PostgreSQL shares it): two processes at
``--rpm R`` send up to 2R together. The README says so; this test pins both halves.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.sandbox import SandboxHandle
from tests.scale.cluster import Cluster, fast_sandbox
from tests.scale.ledger import assert_each_job_once, check_outputs, read_ledger, requests_by_worker

#: Several ``imagerun run`` processes at once: scripts/test's xdist pass keeps every such test on
#: one worker, one after another (PostgreSQL connections and CPU to spare for the rest).
pytestmark = pytest.mark.xdist_group("processes")

#: A pace two processes keep even on a loaded machine (each 5 requests a second): at 2400 a
#: minute each, a starved pair fell under one process's pace and the test read that as one
#: shared limit. Ten seconds of work together: a second process starting 5 s after the first
#: still leaves the middle 80% of the requests at over 500 a minute.
JOBS = 100
RPM = 300


@pytest.fixture
def sandbox() -> Iterator[SandboxHandle]:
    with fast_sandbox(seed=9) as handle:
        yield handle


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_processes_on_one_sqlite_file_do_every_job_once(
    tmp_path: Path, sqlite_url: str, sandbox: SandboxHandle
) -> None:
    cluster = Cluster(tmp_path, sqlite_url, sandbox)
    cluster.submit("sqlite", JOBS)
    try:
        workers = cluster.start_many(2, "--concurrency", "4", "--rpm", str(RPM))
        assert cluster.finish_all() == [0, 0]
    finally:
        cluster.stop_all()

    requests = cluster.requests()
    ledger = read_ledger(sqlite_url)
    assert_each_job_once(ledger, requests)
    assert check_outputs(ledger, [w.data for w in workers]) == {}
    shares = requests_by_worker(ledger)
    assert len(shares) == 2
    assert min(shares.values()) >= JOBS / 10, f"one process barely worked: {shares}"

    # Each process paces itself at RPM: together they went faster than one limit allows.
    times = sorted(r.time.timestamp() for r in requests)
    low, high = len(times) // 10, len(times) * 9 // 10
    achieved = (high - low) / (times[high] - times[low]) * 60
    assert achieved > RPM, f"{achieved:.0f} requests/min: the limit looks shared"
