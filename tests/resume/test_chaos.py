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
JOBS = 240


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

    def start_run(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "runner.cli", "run", "--concurrency", "12", "--grace", "5"],
                env=self.env,
                cwd=self.tmp,
                stdout=log,
                stderr=subprocess.STDOUT,
            )


def _kill_at_random(harness: Harness, rng: random.Random, kills: int) -> int:
    """SIGKILL the runner ``kills`` times at random moments; returns how many hit a live run."""
    hits = 0
    for _ in range(kills):
        proc = harness.start_run()
        time.sleep(rng.uniform(0.6, 2.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            hits += 1
        proc.wait(timeout=30)
    return hits


def _wait_for(condition: Callable[[], bool], proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert proc.poll() is None, "the runner exited before it got going"
        assert time.monotonic() < deadline, "the runner sent nothing within 60 s"
        time.sleep(0.05)


def _finish(harness: Harness) -> None:
    """Run until the runner exits by itself (it stops when nothing is runnable)."""
    for _ in range(5):
        proc = harness.start_run()
        proc.wait(timeout=120)
        ledger = read_ledger(harness.db)
        if not ledger.runnable():
            return
    pytest.fail("the batch never finished")


def _submit(harness: Harness, jobs: int = JOBS) -> None:
    manifest = _manifest(harness.tmp / "chaos.jsonl", jobs)
    result = harness.cli("submit", str(manifest), "--route", ROUTE, "--name", "chaos")
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkill_at_random_moments_loses_nothing_and_repays_nothing(
    tmp_path: Path, sandbox: SandboxHandle
) -> None:
    harness = Harness(tmp_path, sandbox)
    _submit(harness)
    hits = _kill_at_random(harness, random.Random(2026), kills=22)
    assert hits >= 20, f"only {hits} kills hit a live run"
    _finish(harness)
    # Jobs whose request may have left stay `unknown` until the provider's call log says
    # whether it arrived; reconcile settles the ones that never did, which are then safe.
    result = harness.cli("reconcile", "--route", ROUTE)
    assert result.returncode in (0, 1), result.stderr
    _finish(harness)
    ledger = read_ledger(harness.db)
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
