"""``max_in_flight`` caps a route's jobs in flight across every worker process and batch.

Workers started with different batch lists (``imagerun run y`` here, ``imagerun run`` there,
as happens when a batch is submitted while some workers already run) still share the one cap:
it belongs to the route, counted from the live leases of all its batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from runner.sandbox import Latency, RequestRecord, SandboxConfig, SandboxHandle, running_sandbox
from tests.scale.cluster import Cluster, route_config
from tests.scale.ledger import assert_each_job_once, read_ledger

#: Several ``imagerun run`` processes at once: scripts/test's xdist pass keeps every such test on
#: one worker, one after another (PostgreSQL connections and CPU to spare for the rest).
pytestmark = pytest.mark.xdist_group("processes")

CAP = 6
RUN = ("--concurrency", "8", "--rpm", "100000")


@pytest.fixture
def sandbox() -> Iterator[SandboxHandle]:
    # Slow enough that every worker would keep 8 requests in flight without the cap.
    config = SandboxConfig(latency=Latency(mean=0.1), tiny=True, seed=13)
    with running_sandbox(config) as handle:
        yield handle


def most_at_once(requests: Sequence[RequestRecord]) -> int:
    """The largest number of requests the sandbox was serving at the same moment."""
    edges = []
    for r in requests:
        edges += [(r.time, 1), (r.time + timedelta(milliseconds=r.duration_ms), -1)]
    level = peak = 0
    for _, step in sorted(edges):  # an end sorts before a start at the same instant
        level += step
        peak = max(peak, level)
    return peak


@pytest.mark.slow
# A guard against a hang, not a measure: four runs start at once, and on a loaded machine
# their interpreters alone took most of 120 s.
@pytest.mark.timeout(240)
def test_max_in_flight_is_one_cap_for_all_workers_and_batches(
    tmp_path: Path, pg_url: str, sandbox: SandboxHandle
) -> None:
    cluster = Cluster(tmp_path, pg_url, sandbox, config_text=route_config(max_in_flight=CAP))
    cluster.submit("y", 100)  # first: the lowest ids, so "all batches" workers start on it
    cluster.submit("x", 100)
    try:
        cluster.start("x", *RUN)
        cluster.start("x", *RUN)
        cluster.start(*RUN)
        cluster.start(*RUN)
        assert cluster.finish_all() == [0] * 4
    finally:
        cluster.stop_all()

    requests = cluster.requests()
    assert_each_job_once(read_ledger(pg_url), requests)
    peak = most_at_once(requests)
    assert peak <= CAP, f"{peak} requests in flight at once, cap {CAP}"
    assert peak >= CAP // 2, f"only {peak} at once: the test did not load the cap"
