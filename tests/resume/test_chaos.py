"""Crash safety: kill -9 at any moment loses nothing and re-pays nothing.

The runner runs as a real ``imagerun run`` process against the sandbox (a real server on
loopback, in this process) and is SIGKILLed at random moments, then restarted until the batch
is done. Afterwards the database, the files on disk and the sandbox's own request log must
agree. The same invariants hold after SIGTERM and Ctrl-C, which must leave nothing unknown.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runner.sandbox import FaultKind, Latency, SandboxConfig, SandboxHandle, running_sandbox
from tests.resume.invariants import check_invariants, read_ledger

#: Several ``imagerun run`` processes at once: scripts/test's xdist pass keeps every such test on
#: one worker, one after another (PostgreSQL connections and CPU to spare for the rest).
pytestmark = pytest.mark.xdist_group("processes")

ROUTE = "sandbox-laozhang"
#: The kills send a few dozen of these (the route's pace starts low and 2% of the answers are
#: 429s); the rest are run to the end at that pace: more jobs would add time, not kills.
JOBS = 120
#: Share of the kills that land while the run starts rather than while it sends.
STARTUP_KILLS = 0.25
#: Seconds without a new attempt after which a finishing run counts as hung.
STALL_S = 60.0
#: The finishing runs' rate: they only drain what the stops left. At the pace the stopped
#: runs learned from the sandbox's random 429s (2%, no real limit) draining 95 jobs took 75 s.
FINISH_RPM = 1200


def _manifest(path: Path, jobs: int) -> Path:
    lines = [
        f'{{"id": "job-{i}", "prompt": "chaos product render number {i}"}}' for i in range(jobs)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def sandbox() -> Iterator[SandboxHandle]:
    config = SandboxConfig(
        latency=Latency(mean=0.15, jitter=0.1),
        fault_rates={
            FaultKind.SERVER_ERROR: 0.04,
            FaultKind.RATE_LIMIT: 0.02,
            FaultKind.RESET: 0.01,
            FaultKind.TRUNCATE: 0.01,
        },
        tiny=True,
        seed=11,
    )
    with running_sandbox(config) as handle:
        yield handle


class Harness:
    """Runs ``imagerun`` as a child process against the sandbox, with its own db and data."""

    def __init__(self, tmp: Path, handle: SandboxHandle) -> None:
        self.tmp = tmp
        self.db = tmp / "imagerun.db"
        self.data = tmp / "data"
        self.log = tmp / "runner.log"
        self.env = {
            **os.environ,
            "IMAGERUN_DB": f"sqlite+aiosqlite:///{self.db}",
            "IMAGERUN_DATA": str(self.data),
            "IMAGERUN_ROUTE_SANDBOX_LAOZHANG_BASE_URL": handle.laozhang_base,
            "SANDBOX_LAOZHANG_API_KEY": "sk-default-chaos-SECRET-c0ffee",
        }
        self.env.pop("IMAGERUN_CONFIG", None)

    def forget_pace(self) -> None:
        """Drop the pace the route learned (kept in its ``route_state`` row between runs): a
        run told ``--rpm`` would still start from it."""
        with sqlite3.connect(self.db, timeout=30) as conn:
            conn.execute("UPDATE route_state SET pace = NULL, pace_at = NULL")

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "runner.cli", *args],
            env=self.env,
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start_run(self, *extra: str) -> subprocess.Popen[bytes]:
        run = ["run", "--concurrency", "12", "--grace", "5", *extra]
        with self.log.open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "runner.cli", *run],
                env=self.env,
                cwd=self.tmp,
                stdout=log,
                stderr=subprocess.STDOUT,
            )


def _kill_at_random(
    harness: Harness, handle: SandboxHandle, rng: random.Random, kills: int
) -> tuple[int, int]:
    """SIGKILL the runner ``kills`` times at random moments (or until the batch is done).

    Most kills land at a random moment after the run's first request reached the sandbox, so
    they hit a run at work however long the interpreter takes to start on a loaded machine; the
    rest land while it starts (recovery and adoption of what the last kill left). Returns how
    many kills hit a live run, and how many of those hit one that was sending.
    """
    hits = working = 0
    for _ in range(kills):
        if not read_ledger(harness.db).runnable():
            break
        before = len(handle.sandbox.requests())
        proc = harness.start_run()
        if rng.random() < STARTUP_KILLS:
            time.sleep(rng.uniform(0.05, 1.0))
            sending = False
        else:
            sending = _wait_for_requests(handle, before, proc)
            time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            hits += 1
            working += sending
        proc.wait(timeout=30)
    return hits, working


def _wait_for_requests(handle: SandboxHandle, before: int, proc: subprocess.Popen[bytes]) -> bool:
    """Wait until the sandbox sees a request beyond the first ``before``; ``False`` if the
    runner exited first."""
    deadline = time.monotonic() + 60
    while len(handle.sandbox.requests()) <= before:
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "the runner sent nothing within 60 s"
        time.sleep(0.02)
    return True


def _wait_for(condition: Callable[[], bool], proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert proc.poll() is None, "the runner exited before it got going"
        assert time.monotonic() < deadline, "the runner sent nothing within 60 s"
        time.sleep(0.05)


def _finish(harness: Harness) -> None:
    """Run until the runner exits by itself (it stops when nothing is runnable).

    The run is given no fixed time: how fast it goes depends on the machine's load (it is
    told :data:`FINISH_RPM`, the pace the stopped runs learned forgotten). It must keep going,
    though: a run that records no new attempt for ``STALL_S`` seconds while jobs are left has
    hung, and fails the test.
    """
    for _ in range(5):
        harness.forget_pace()
        proc = harness.start_run("--rpm", str(FINISH_RPM))
        try:
            _wait_while_working(harness, proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        ledger = read_ledger(harness.db)
        if not ledger.runnable():
            return
    pytest.fail("the batch never finished")


def _wait_while_working(harness: Harness, proc: subprocess.Popen[bytes]) -> None:
    attempts, moved_at = -1, time.monotonic()
    while proc.poll() is None:
        with sqlite3.connect(harness.db, timeout=30) as conn:
            (now,) = conn.execute("SELECT count(*) FROM attempts").fetchone()
        if now != attempts:
            attempts, moved_at = now, time.monotonic()
        assert time.monotonic() - moved_at < STALL_S, (
            f"the run recorded no attempt for {STALL_S:.0f} s ({attempts} so far)"
        )
        time.sleep(0.5)


def _submit(harness: Harness, jobs: int = JOBS) -> None:
    manifest = _manifest(harness.tmp / "chaos.jsonl", jobs)
    result = harness.cli("submit", str(manifest), "--route", ROUTE, "--name", "chaos")
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_at_random_moments_loses_nothing_and_repays_nothing(
    tmp_path: Path, sandbox: SandboxHandle
) -> None:
    harness = Harness(tmp_path, sandbox)
    _submit(harness)
    hits, working = _kill_at_random(harness, sandbox, random.Random(2026), kills=22)
    assert hits >= 20, f"only {hits} kills hit a live run"
    assert working >= 12, f"only {working} kills hit a run that was sending"
    _finish(harness)
    # Jobs whose request may have left stay `unknown` until the provider's call log says
    # whether it arrived; reconcile settles them. Every request the killed runs sent was
    # answered by the sandbox within a second (latency 0.15 +- 0.1 s), long before now, so its
    # call log is final: no settling time is needed before a missing row means "not charged".
    result = harness.cli("reconcile", "--route", ROUTE, "--settle", "0")
    assert result.returncode in (0, 1), result.stderr
    ledger = read_ledger(harness.db)
    assert not ledger.runnable(), "reconcile made jobs runnable: they would be sent again"
    check_invariants(ledger, sandbox.sandbox.requests(), harness.data, allow_unknown=True)
    _no_secret_anywhere(harness)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sigterm_and_ctrl_c_stop_cleanly_with_nothing_unknown(
    tmp_path: Path, sandbox: SandboxHandle
) -> None:
    """SIGTERM and SIGINT (Ctrl-C), two stops each, on one batch: none leaves a job unknown."""
    harness = Harness(tmp_path, sandbox)
    _submit(harness, jobs=120)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGTERM, signal.SIGINT):
        before = len(sandbox.sandbox.requests())
        proc = harness.start_run()
        # Signal a run that is working (not one still importing): requests are in flight.
        _wait_for(lambda n=before: len(sandbox.sandbox.requests()) > n + 5, proc)
        proc.send_signal(signum)
        assert proc.wait(timeout=60) in (0, 1)
        ledger = read_ledger(harness.db)
        assert ledger.unknown_jobs() == [], f"a graceful stop ({signum.name}) left unknown jobs"
    _finish(harness)
    ledger = read_ledger(harness.db)
    check_invariants(ledger, sandbox.sandbox.requests(), harness.data, allow_unknown=False)


def _no_secret_anywhere(harness: Harness) -> None:
    """The API key never reaches the database, the logs or the exports."""
    export_dir = harness.tmp / "exports"
    formats = ["files", "jsonl", "csv", "parquet", "webdataset", "html"]
    args = ["export", "chaos", "--out", str(export_dir), "--include-failed"]
    for fmt in formats:
        args += ["--format", fmt]
    result = harness.cli(*args)
    assert result.returncode == 0, result.stderr
    secret = b"chaos-SECRET-c0ffee"
    scanned = 0
    for path in [*harness.tmp.rglob("*")]:
        if path.is_file():
            assert secret not in path.read_bytes(), f"the API key leaked into {path}"
            scanned += 1
    assert scanned > JOBS  # the db, its WAL, logs, outputs and every export were read
