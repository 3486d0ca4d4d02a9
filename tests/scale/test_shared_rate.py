"""Four worker processes on PostgreSQL share one queue and one rate limit.

The sandbox enforces R requests per minute per key with 429s; imagerun's route is configured
at the same R. Each worker alone could send far faster than R, so only the rate schedule the
workers share through the database keeps them, together, under the provider's limit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from runner.sandbox import RequestRecord, SandboxHandle
from tests.scale.cluster import Cluster, fast_sandbox, route_config, wait_until
from tests.scale.ledger import Ledger, check_outputs, read_ledger, requests_by_worker

#: Wall-clock rates: run alone (scripts/test runs `serial` tests after the parallel pass).
pytestmark = pytest.mark.serial

#: Well under what four workers manage together on a loaded machine: at 3,000 a minute the
#: test measured the machine, not the schedule (under load four workers did 1,415 a minute
#: paced at 3,000 and 1,400 a minute not paced at all).
RPM = 600
#: Thirty seconds at the limit: its steady part (10th to 90th percentile) spans about 24.
JOBS = 300
WORKERS = 4


def assert_each_job_paid_once(ledger: Ledger, requests: Sequence[RequestRecord]) -> None:
    """Every job succeeded with one paid request; the others were 429s; log = ledger, 1:1."""
    seen = {r.client_request_id: r.status for r in requests}
    assert len(seen) == len(requests), "the provider saw one of our request ids twice"
    assert set(seen) == {a["id"] for a in ledger.attempts}, "the log and the ledger differ"
    assert Counter(j["state"] for j in ledger.jobs) == {"succeeded": len(ledger.jobs)}
    paid = Counter(a["job_id"] for a in ledger.attempts if a["outcome"] == "ok")
    assert set(paid.values()) == {1}, "a job paid twice"
    assert len(paid) == len(ledger.jobs)
    for attempt in ledger.attempts:
        if attempt["outcome"] != "ok":
            assert (attempt["outcome"], seen[attempt["id"]]) == ("rate_limited", 429)


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
    # The limiter allows a second's worth at once; a loaded machine that stalls a worker for
    # longer than that with slots booked sends them late and together (the tree before the
    # pacing changes met 2 429s in 300 here, as this one does): a handful, retried.
    refused = [r for r in requests if r.status == 429]
    assert len(refused) <= 0.02 * len(requests), f"{len(refused)} 429s in {len(requests)}"
    ledger = read_ledger(pg_url)
    assert_each_job_paid_once(ledger, requests)
    assert check_outputs(ledger, [w.data for w in workers]) == {}

    shares = requests_by_worker(ledger)
    assert len(shares) == WORKERS
    assert min(shares.values()) >= JOBS / WORKERS / 3, f"a worker barely worked: {shares}"
    # Together they could go far faster than R: the shared schedule alone holds them to it.

    # Achieved rate over the steady part (10th to 90th percentile of arrival times).
    times = sorted(r.time.timestamp() for r in requests if r.status == 200)
    low, high = len(times) // 10, len(times) * 9 // 10
    achieved = (high - low) / (times[high] - times[low]) * 60
    # Slots no worker was awake to take are lost on a loaded machine, never caught up on in a
    # burst, so the rate reached says as much about the machine as about the schedule (0.90
    # of R at load 22, 0.57 at load 21 with a benchmark beside it). Bounded below only where a
    # schedule that serialises its workers falls (0.34 of R when its row was held locked).
    assert achieved >= 0.5 * RPM, f"{achieved:.0f} requests/min, limit {RPM}"
    assert achieved <= RPM, f"{achieved:.0f} requests/min, limit {RPM}"
