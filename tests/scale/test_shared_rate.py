"""Four worker processes on PostgreSQL share one queue and one rate limit.

The sandbox enforces R requests per minute per key with 429s; imagerun's route is configured
at the same R. Each worker alone could send far faster than R, so only the rate schedule the
workers share through the database keeps them, together, under the provider's limit.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.sandbox import SandboxHandle
from tests.scale.cluster import Cluster, fast_sandbox, route_config, wait_until
from tests.scale.ledger import (
    assert_each_job_once,
    check_outputs,
    read_ledger,
    requests_by_worker,
)

#: Wall-clock rates: run alone (scripts/test runs `serial` tests after the parallel pass).
pytestmark = pytest.mark.serial

RPM = 3000
#: Twelve seconds at the limit: its steady part (10th to 90th percentile) spans about ten.
JOBS = 600
WORKERS = 4


@pytest.fixture
def sandbox() -> Iterator[SandboxHandle]:
    with fast_sandbox(seed=3, rpm=RPM) as handle:
        yield handle


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_four_workers_share_one_queue_and_one_rate_limit(
    tmp_path: Path, pg_url: str, sandbox: SandboxHandle
) -> None:
    cluster = Cluster(tmp_path, pg_url, sandbox, config_text=route_config(rpm=RPM))
    cluster.submit("scale", JOBS)
    try:
        workers = cluster.start_many(WORKERS, "--concurrency", "4")
        # `imagerun status` lists every worker while they run.
        wait_until(lambda: len(cluster.status()["workers"]) == WORKERS, "4 live workers")
        assert cluster.finish_all() == [0] * WORKERS
    finally:
        cluster.stop_all()

    requests = cluster.requests()
    assert [r.status for r in requests if r.status == 429] == [], "the provider's limit was hit"
    ledger = read_ledger(pg_url)
    assert_each_job_once(ledger, requests)
    assert check_outputs(ledger, [w.data for w in workers]) == {}

    shares = requests_by_worker(ledger)
    assert len(shares) == WORKERS
    assert min(shares.values()) >= JOBS / WORKERS / 3, f"a worker barely worked: {shares}"

    # Achieved rate over the steady part (10th to 90th percentile of arrival times).
    times = sorted(r.time.timestamp() for r in requests)
    low, high = len(times) // 10, len(times) * 9 // 10
    achieved = (high - low) / (times[high] - times[low]) * 60
    assert achieved >= 0.95 * RPM, f"{achieved:.0f} requests/min, limit {RPM}"
    assert achieved <= RPM, f"{achieved:.0f} requests/min, limit {RPM}"
