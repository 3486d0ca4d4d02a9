"""``status``, ``retry`` and ``cancel`` judge the jobs of dead workers before they report or act.

A run is killed with SIGKILL while its requests are in flight. Its jobs are still ``running``
in the database; no later ``run`` has recovered them. ``imagerun status`` must show them
``unknown`` straight away when the worker's pid is gone from this host, or once its lease ran
out when it ran on another machine, and ``imagerun retry --unknown`` must requeue them.
"""

from __future__ import annotations

import json
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.files.layout import output_path
from runner.sandbox import Latency, SandboxConfig, SandboxHandle, running_sandbox
from tests.e2e.harness import png
from tests.scale.cluster import OTHER_HOST, Cluster, wait_until

JOBS = 3


@pytest.fixture
def hanging_sandbox() -> Iterator[SandboxHandle]:
    """Every request takes a minute: whatever a run sent is in flight when it is killed."""
    with running_sandbox(SandboxConfig(latency=Latency(mean=60.0), tiny=True, seed=3)) as handle:
        yield handle


def _in_flight(db_file: Path) -> int:
    with sqlite3.connect(db_file) as db:
        row = db.execute("SELECT count(*) FROM attempts WHERE state = 'sending'").fetchone()
    return int(row[0])


def _states(cluster: Cluster) -> dict[str, int]:
    [batch] = cluster.status()["batches"]
    states: dict[str, int] = batch["states"]
    return states


def _kill_mid_flight(cluster: Cluster, db_file: Path, *run: str, host: str | None) -> None:
    worker = cluster.start("--concurrency", str(JOBS), *run, host=host)
    try:
        wait_until(lambda: _in_flight(db_file) == JOBS, "every job's request to be in flight")
    finally:
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(timeout=10)


@pytest.mark.timeout(120)
def test_a_killed_local_runs_jobs_are_unknown_at_once_and_retry_requeues_them(
    tmp_path: Path, sqlite_url: str, hanging_sandbox: SandboxHandle
) -> None:
    cluster = Cluster(tmp_path, sqlite_url, hanging_sandbox)
    cluster.submit("killed", JOBS)
    # The lease is long: only the pid, gone from this host, tells that the worker died.
    _kill_mid_flight(cluster, tmp_path / "imagerun.db", "--lease", "600", host=None)

    states = _states(cluster)

    assert (states["running"], states["unknown"]) == (0, JOBS)
    _retry_requeues_every_unknown_job(cluster)


@pytest.mark.timeout(120)
def test_another_machines_dead_run_is_judged_once_its_lease_ran_out(
    tmp_path: Path, sqlite_url: str, hanging_sandbox: SandboxHandle
) -> None:
    cluster = Cluster(tmp_path, sqlite_url, hanging_sandbox)
    cluster.submit("killed", JOBS)
    _kill_mid_flight(cluster, tmp_path / "imagerun.db", "--lease", "1", host=OTHER_HOST)

    # Its pid means nothing here; its one-second lease, no longer renewed, runs out.
    wait_until(lambda: _states(cluster)["running"] == 0, "status to judge the leases")

    assert _states(cluster)["unknown"] == JOBS
    _retry_requeues_every_unknown_job(cluster)


def _retry_requeues_every_unknown_job(cluster: Cluster) -> None:
    retried = cluster.cli("retry", "killed", "--unknown")
    assert retried.returncode == 0, retried.stderr
    assert f"{JOBS} job(s) requeued" in retried.stdout
    states = _states(cluster)
    assert (states["queued"], states["unknown"], states["running"]) == (JOBS, 0, 0)


@pytest.mark.timeout(120)
def test_cancel_drops_a_dead_runs_jobs_too(
    tmp_path: Path, sqlite_url: str, hanging_sandbox: SandboxHandle
) -> None:
    cluster = Cluster(tmp_path, sqlite_url, hanging_sandbox)
    cluster.submit("killed", JOBS)
    _kill_mid_flight(cluster, tmp_path / "imagerun.db", "--lease", "600", host=None)

    cancelled = cluster.cli("cancel", "killed")

    assert cancelled.returncode == 0, cancelled.stderr
    status: dict[str, Any] = json.loads(cluster.cli("status", "killed", "--json").stdout)
    states = status["batches"][0]["states"]
    assert (states["running"], states["cancelled"]) == (0, JOBS)
    assert f"{JOBS} job(s) cancelled." in cancelled.stdout


@pytest.mark.timeout(120)
def test_retry_unknown_adopts_an_image_the_dead_worker_wrote_instead_of_buying_it_again(
    tmp_path: Path, sqlite_url: str, hanging_sandbox: SandboxHandle
) -> None:
    """Killed between writing an image and recording it: the image is the job's, paid for."""
    cluster = Cluster(tmp_path, sqlite_url, hanging_sandbox)
    cluster.submit("killed", JOBS)
    _kill_mid_flight(cluster, tmp_path / "imagerun.db", "--lease", "600", host=None)
    [worker] = cluster.workers
    with sqlite3.connect(tmp_path / "imagerun.db") as db:
        batch_id, job_id = db.execute("SELECT batch_id, id FROM jobs ORDER BY id").fetchone()
    orphan = worker.data / output_path(batch_id, job_id, 0, "png")
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(png(64, 64))

    retried = cluster.cli("--data", str(worker.data), "retry", "killed", "--unknown")

    assert retried.returncode == 0, retried.stderr
    assert f"{JOBS - 1} job(s) requeued" in retried.stdout
    states = _states(cluster)
    assert (states["succeeded"], states["queued"], states["unknown"]) == (1, JOBS - 1, 0)
    assert orphan.exists()
