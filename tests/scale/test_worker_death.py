"""A worker machine dies mid-run: the others take back its jobs, under the ``unknown`` rules.

The victim runs "on another machine" (another host name), so the survivors cannot see from a
pid that it is gone: they only notice because its leases stop being renewed and run out.
Jobs it had claimed but not sent go back to the queue and are done by the others; jobs whose
request may have reached the provider become ``unknown`` and are never sent again.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.sandbox import SandboxHandle
from tests.resume.invariants import Ledger
from tests.scale.cluster import OTHER_HOST, Cluster, fast_sandbox, wait_until
from tests.scale.ledger import (
    Holdings,
    assert_no_unexplained_resend,
    check_outputs,
    holdings,
    read_ledger,
    worker_ids,
)

#: Several ``imagerun run`` processes at once: scripts/test's xdist pass keeps every such test on
#: one worker, one after another (PostgreSQL connections and CPU to spare for the rest).
pytestmark = pytest.mark.xdist_group("processes")

JOBS = 600
#: Short leases, so the survivors notice the death within seconds (heartbeats every lease/3),
#: but long enough that a survivor the loaded machine starves of CPU for a few seconds keeps
#: its own (at 3 s one lapsed under load, and its job was taken as if it had died too).
RUN = ("--concurrency", "4", "--rpm", "6000", "--lease", "8")


@pytest.fixture
def sandbox() -> Iterator[SandboxHandle]:
    with fast_sandbox(seed=5) as handle:
        yield handle


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a_dead_workers_jobs_are_recovered_by_the_others(
    tmp_path: Path, pg_url: str, sandbox: SandboxHandle
) -> None:
    cluster = Cluster(tmp_path, pg_url, sandbox)
    cluster.submit("death", JOBS)
    try:
        survivors = cluster.start_many(3, *RUN)
        victim = cluster.start(*RUN, host=OTHER_HOST)
        prefix = f"w-{OTHER_HOST}-{victim.pid}-"
        # Kill it while it is really working: requests sent, jobs claimed and in flight.
        wait_until(
            lambda: (h := holdings(pg_url, prefix)).attempts >= 40 and len(h.leased) >= 5,
            "the victim to be busy",
        )
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(timeout=10)
        held = holdings(pg_url, prefix)
        codes = cluster.finish_all(survivors)
    finally:
        cluster.stop_all()

    ledger = read_ledger(pg_url)
    victim_id = worker_ids(pg_url)[victim.pid]
    # 1 when a job is left unknown (the run is not clean), 0 if the kill caught none in flight.
    assert set(codes) <= {0, 1}
    _check_recovery(ledger, cluster, held, victim_id)
    orphans = check_outputs(ledger, [w.data for w in cluster.workers])
    unknown = {j["id"] for j in ledger.unknown_jobs()}
    for relative, path in orphans.items():
        # An image the victim wrote but never recorded: its job is held as unknown.
        assert path.is_relative_to(victim.data), f"unrecorded file {path}"
        name = Path(relative).name
        assert name.startswith(".tmp-") or int(name.split("-")[0]) in unknown, path


def _check_recovery(ledger: Ledger, cluster: Cluster, held: Holdings, victim_id: str) -> None:
    requests = cluster.requests()
    seen = [r.client_request_id for r in requests]
    assert len(seen) == len(set(seen)), "the provider saw one of our request ids twice"
    attempts = {a["id"]: a for a in ledger.attempts}
    assert set(seen) <= set(attempts), "the provider saw a request the ledger never recorded"
    for attempt_id in set(attempts) - set(seen):
        # Only the victim's last requests may be missing from the log: killed before they left.
        assert attempts[attempt_id]["worker_id"] == victim_id, attempts[attempt_id]
        assert attempts[attempt_id]["outcome"] == "lost", attempts[attempt_id]

    # Nothing lost: every job is done or held as unknown; none is stuck in the queue.
    states = Counter(j["state"] for j in ledger.jobs)
    assert set(states) <= {"succeeded", "unknown"}, states
    assert len(ledger.jobs) == JOBS
    # Nothing sent twice: no faults here, so each job reached the provider at most once.
    sent = Counter(attempts[i]["job_id"] for i in seen)
    assert max(sent.values()) == 1, "a job was sent twice"
    assert_no_unexplained_resend(ledger, requests)

    by_job = ledger.attempts_by_job()
    unknown = {j["id"] for j in ledger.unknown_jobs()}
    # Unknown: exactly the jobs the victim had in flight, closed as `lost`, never resent.
    assert unknown == held.in_flight
    for job_id in unknown:
        assert [a["outcome"] for a in by_job[job_id]] == ["lost"], by_job[job_id]
        assert by_job[job_id][0]["worker_id"] == victim_id
    # Claimed but never sent: the survivors did them, once each.
    taken_back = held.leased - held.in_flight
    assert taken_back, "the victim held no unsent job when it died"
    for job_id in taken_back:
        tries = by_job[job_id]
        assert [a["outcome"] for a in tries] == ["ok"], tries
        assert tries[0]["worker_id"] != victim_id
