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
from tests.scale.cluster import ROUTE, Cluster, fast_sandbox, route_config, wait_until
from tests.scale.ledger import Ledger, check_outputs, read_ledger, requests_by_worker

#: Wall-clock rates: kept out of the parallel pass (scripts/test runs `serial` tests after it).
pytestmark = pytest.mark.serial

#: Well under what four workers manage together on a loaded machine: at 3,000 a minute the
#: test measured the machine, not the schedule (under load four workers did 1,415 a minute
#: paced at 3,000 and 1,400 a minute not paced at all).
RPM = 600
#: Thirty seconds at the limit: its steady part (10th to 90th percentile) spans about 24.
JOBS = 300
WORKERS = 4
#: 429s allowed: a worker stalled past the limiter's second of burst, a probe past the limit.
HANDFUL = 6
#: Requests over which four workers told three times the limit learn it.
LEARNING = 150
#: Requests the sandbox's bucket lets arrive at once: a second's worth (the slack allowed).
BURST = RPM // 60


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


def run_four(tmp_path: Path, pg_url: str, sandbox: SandboxHandle, rpm: int) -> Cluster:
    """The four workers, told ``rpm``, through the whole queue."""
    cluster = Cluster(tmp_path, pg_url, sandbox, config_text=route_config(rpm=rpm))
    cluster.submit("scale", JOBS)
    try:
        cluster.start_many(WORKERS, "--concurrency", "4")
        # `imagerun status` lists every worker while they run.
        wait_until(lambda: len(cluster.status()["workers"]) == WORKERS, "4 live workers")
        assert cluster.finish_all() == [0] * WORKERS
    finally:
        cluster.stop_all()
    return cluster


def check_run(cluster: Cluster, pg_url: str) -> list[RequestRecord]:
    """Every job paid once, every worker worked, never faster than the limit."""
    requests = cluster.requests()
    ledger = read_ledger(pg_url)
    assert_each_job_paid_once(ledger, requests)
    assert check_outputs(ledger, [w.data for w in cluster.workers]) == {}
    shares = requests_by_worker(ledger)
    assert len(shares) == WORKERS
    assert min(shares.values()) >= JOBS / WORKERS / 3, f"a worker barely worked: {shares}"
    # Together they could go far faster than R: the shared schedule alone holds them to it.
    # Every request counts here, refused ones too (the successes alone could never exceed
    # what the sandbox's bucket admits, whatever the schedule did): from the LEARNING-th
    # arrival on (told three times the limit, the first ones are sent at it before the
    # answers say so) to the 90th percentile, at most R plus a second's worth, the slack a
    # schedule of slots one interval apart has at the ends of the span (measured: 588 and
    # 560 a minute over 12-14 s against 649 and 644 allowed; each worker at R alone, 2,400).
    sent, span = sent_rate(requests)
    allowed = RPM + BURST * 60 / span
    assert sent <= allowed, f"sent {sent:.0f}/min over {span:.0f} s, limit {allowed:.0f}"
    return requests


def sent_rate(requests: Sequence[RequestRecord]) -> tuple[float, float]:
    """Requests per minute (any status) from the LEARNING-th arrival to the 90th percentile,
    and the seconds between those two."""
    times = sorted(r.time.timestamp() for r in requests)
    return per_minute(times, LEARNING, len(times) * 9 // 10)


def steady(requests: Sequence[RequestRecord]) -> float:
    """Successful requests per minute between the 10th and 90th percentile of their
    arrivals."""
    times = sorted(r.time.timestamp() for r in requests if r.status == 200)
    return per_minute(times, len(times) // 10, len(times) * 9 // 10)[0]


def per_minute(times: Sequence[float], low: int, high: int) -> tuple[float, float]:
    """Arrivals a minute from ``times[low]`` to ``times[high]``, and the seconds between."""
    span = times[high] - times[low]
    return (high - low) / span * 60, span


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_four_workers_share_one_queue_and_one_rate_limit(
    tmp_path: Path, pg_url: str, sandbox: SandboxHandle
) -> None:
    """Told the limit: a handful of 429s at most, and if one came, the pace every worker
    shares is not left where a backoff put it (one backoff taken up once by each, then each
    climbs back; before, each climb was undone by another's older save and the route stayed
    where the backoff left it)."""
    cluster = run_four(tmp_path, pg_url, sandbox, RPM)
    requests = check_run(cluster, pg_url)
    # The limiter allows a second's worth at once; a loaded machine that stalls a worker for
    # longer than that with slots booked sends them late and together: a handful, retried.
    refused = [r for r in requests if r.status == 429]
    assert len(refused) <= HANDFUL, f"{len(refused)} 429s in {len(requests)}"
    # How far under R they stay says as much about the machine's load as about the schedule
    # (0.57 of R at load 21 with a benchmark beside it): bounded below only where a schedule
    # that makes its workers take turns falls (0.34 of R, its row locked per transaction).
    achieved = steady(requests)
    assert achieved >= 0.45 * RPM, f"{achieved:.0f} requests/min: the workers took turns"
    # Where the backoff left it the pinned route stayed (0.45-0.50 of R in a benchmark); a
    # backoff capped at what a loaded machine let through may start lower, and climbs back.
    if (pace := cluster.status()["paces"].get(ROUTE)) is not None:
        assert pace["rpm"] >= 0.5 * RPM, pace


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_four_workers_told_three_times_the_limit_converge_under_it(
    tmp_path: Path, pg_url: str, sandbox: SandboxHandle
) -> None:
    """Told three times the limit, without rate-limit headers: the workers learn it together
    (what the route as a whole let through, each backoff taken up by every worker), and
    after the first LEARNING requests only a handful of 429s more come."""
    cluster = run_four(tmp_path, pg_url, sandbox, 3 * RPM)
    requests = check_run(cluster, pg_url)
    refused = [k for k, r in enumerate(requests) if r.status == 429]
    assert refused, "the provider never pushed back: the test did not overdrive it"
    assert len([k for k in refused if k >= LEARNING]) <= HANDFUL, f"429s at {refused}"
    # Learned from the 429s and under the rate given (a worker held back by a loaded
    # machine sees no 429 and probes on, which says nothing of the limit).
    pace = cluster.status()["paces"][ROUTE]
    assert (pace["reason"], pace["rpm"] < 3 * RPM) == ("backed off after a 429", True), pace
