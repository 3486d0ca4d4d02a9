"""Crash safety: a real ``imagerun run`` SIGKILLed at each step of a remote batch's life.

The sandbox holds the answers of ``POST /files`` and ``POST /batches`` after the object
exists (``file_create_delay``, ``batch_create_delay``), so the runner can be killed between
"created on the server" and "recorded locally". After a restart there must be exactly one
remote batch per set of jobs on the sandbox, every job done once, every line recorded once,
and the ledger's total what the sandbox billed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from runner.models import RemoteStep
from runner.sandbox import Latency, SandboxConfig, SandboxHandle, running_sandbox
from runner.store import RemoteBatch
from tests.resume.invariants import Ledger

from .conftest import ROUTE
from .invariants import check_remote, sandbox_batches
from .test_driver import noise_png

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
def sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox(SandboxConfig()) as handle:
        yield handle


class Runner:
    """``imagerun`` as a child process with its own database and data directory."""

    def __init__(self, tmp: Path, handle: SandboxHandle, pg_url: str | None = None) -> None:
        self.tmp = tmp
        self.db = tmp / "imagerun.db"
        self.pg_url = pg_url
        self.data = tmp / "data"
        self.log = tmp / "runner.log"
        self.env = {
            **os.environ,
            "IMAGERUN_DB": pg_url or f"sqlite+aiosqlite:///{self.db}",
            "IMAGERUN_DATA": str(self.data),
            "IMAGERUN_ROUTE_SANDBOX_OPENAI_BATCH_BASE_URL": handle.openai_base,
        }
        self.env.pop("IMAGERUN_CONFIG", None)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "runner.cli", *args],
            env=self.env,
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def start(self, *extra: str) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "runner.cli", "run", "--grace", "5", *extra],
                env=self.env,
                cwd=self.tmp,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def submit(self, jobs: int, name: str = "kill") -> None:
        lines = [f'{{"id": "k{i}", "prompt": "{name} test {i}"}}' for i in range(jobs)]
        manifest = self.tmp / f"{name}.jsonl"
        manifest.write_text("\n".join(lines) + "\n")
        result = self.cli("submit", str(manifest), "--route", ROUTE, "--name", name)
        assert result.returncode == 0, result.stderr

    def rows(self, sql: str) -> list[dict[str, Any]]:
        """The rows of ``sql`` on the runner's database (none before it is migrated)."""
        if self.pg_url is not None:
            return asyncio.run(_pg_rows(self.pg_url, sql))
        if not self.db.exists():
            return []
        with contextlib.closing(sqlite3.connect(self.db)) as conn:
            conn.row_factory = sqlite3.Row
            try:
                return [dict(r) for r in conn.execute(sql)]
            except sqlite3.OperationalError:  # not migrated yet, or locked for a moment
                return []

    def remote(self) -> list[dict[str, Any]]:
        return self.rows("SELECT * FROM remote_batches")

    def settled_lines(self) -> int:
        done = "SELECT id FROM attempts WHERE remote_batch_id IS NOT NULL AND state = 'done'"
        return len(self.rows(done))

    def ledger(self) -> Ledger:
        return Ledger(
            jobs=self.rows("SELECT * FROM jobs"),
            attempts=self.rows("SELECT * FROM attempts"),
            outputs=self.rows("SELECT * FROM outputs"),
        )

    def kill_when(self, condition: Callable[[], bool]) -> None:
        """Start a run and SIGKILL it once ``condition`` holds (it must still be running)."""
        proc = self.start()
        # Under load a 400-line remote batch can take most of a minute to reach applying.
        deadline = time.monotonic() + 120
        while not condition():
            assert proc.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, ("the moment to kill never came", self.remote())
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def finish(self) -> None:
        for _ in range(3):
            proc = self.start()
            assert proc.wait(timeout=120) in (0, 1), self.log.read_text()[-3000:]
            if not self.ledger().runnable():
                return
        pytest.fail("the batch never finished")

    def check(self, sandbox: SandboxHandle, jobs: int) -> None:
        ledger = self.ledger()
        assert {j["state"] for j in ledger.jobs} == {"succeeded"}
        assert len(ledger.jobs) == jobs
        ours = [_remote(r) for r in self.remote()]
        check_remote(sandbox.sandbox, ours, ledger.attempts, ledger.jobs, ledger.outputs)
        assert all(rb.step is RemoteStep.DONE for rb in ours)
        # Nothing we uploaded is left on the provider (a second upload would be).
        names = [f.filename for f in sandbox.sandbox.uploads if f.filename.startswith("imagerun-")]
        assert names == []


async def _pg_rows(url: str, sql: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        return [dict(r) for r in await conn.fetch(sql)]
    except asyncpg.UndefinedTableError:
        return []
    finally:
        await conn.close()


def _remote(row: dict[str, Any]) -> RemoteBatch:
    return RemoteBatch(
        id=row["id"],
        batch_id=row["batch_id"],
        route=row["route"],
        endpoint=row["endpoint"],
        model=row["model"],
        step=RemoteStep(row["step"]),
        line_count=row["line_count"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        remote_id=row["remote_id"],
        status=row["status"],
    )


def test_kill_between_upload_and_recording_it_uploads_no_second_input(
    tmp_path: Path, sandbox: SandboxHandle
) -> None:
    sandbox.sandbox.reset(SandboxConfig(file_create_delay=5.0))
    runner = Runner(tmp_path, sandbox)
    runner.submit(5)

    def uploaded() -> bool:
        return any(f.filename.startswith("imagerun-rb") for f in sandbox.sandbox.uploads)

    runner.kill_when(uploaded)
    (row,) = runner.remote()
    assert (row["step"], row["input_file_id"]) == ("preparing", None)
    sandbox.sandbox.configure(file_create_delay=0.0)
    runner.finish()

    runner.check(sandbox, 5)
    assert len(sandbox_batches(sandbox.sandbox)) == 1


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_kill_between_create_and_recording_it_creates_no_second_batch(
    tmp_path: Path, sandbox: SandboxHandle, database: str, request: pytest.FixtureRequest
) -> None:
    pg_url = request.getfixturevalue("pg_url") if database == "postgresql" else None
    sandbox.sandbox.reset(SandboxConfig(batch_create_delay=5.0))
    runner = Runner(tmp_path, sandbox, pg_url)
    runner.submit(5)

    runner.kill_when(lambda: bool(sandbox_batches(sandbox.sandbox)))
    (row,) = runner.remote()
    assert (row["step"], row["remote_id"]) == ("uploaded", None)
    sandbox.sandbox.configure(batch_create_delay=0.0)
    runner.finish()

    runner.check(sandbox, 5)
    assert len(sandbox_batches(sandbox.sandbox)) == 1


def test_kill_while_polling_resumes_the_same_remote_batch(
    tmp_path: Path, sandbox: SandboxHandle
) -> None:
    config = SandboxConfig(batch_window=60.0, batch_concurrency=2, latency=Latency(mean=0.2))
    sandbox.sandbox.reset(config)
    runner = Runner(tmp_path, sandbox)
    runner.submit(12)

    runner.kill_when(lambda: any(r["step"] == "submitted" for r in runner.remote()))
    runner.finish()

    runner.check(sandbox, 12)
    assert len(sandbox_batches(sandbox.sandbox)) == 1


def test_kill_while_applying_records_no_line_twice(tmp_path: Path, sandbox: SandboxHandle) -> None:
    sandbox.sandbox.reset(SandboxConfig(batch_window=60.0, batch_concurrency=64))
    runner = Runner(tmp_path, sandbox)
    runner.submit(400)

    def applying() -> bool:
        rows = runner.remote()
        return any(r["step"] == "applying" for r in rows) and runner.settled_lines() > 0

    runner.kill_when(applying)
    assert 0 < runner.settled_lines() < 400, "the kill did not land while applying"
    runner.finish()

    runner.check(sandbox, 400)
    assert len(sandbox_batches(sandbox.sandbox)) == 1


def test_kill_at_random_moments_loses_no_line_and_pays_none_twice(
    tmp_path: Path, sandbox: SandboxHandle
) -> None:
    config = SandboxConfig(
        batch_window=60.0,
        batch_concurrency=1,
        # Slow enough that the lines outlast the kills: every kill lands on unfinished work.
        # A batch's ten lines one at a time, 0.8 s each: 8 s of work at the provider, while
        # a kill comes every 0.8-2.5 s (at 0.15 s and two at a time, a fast machine had all
        # the work done after two kills).
        latency=Latency(mean=0.8, jitter=0.2),
        file_create_delay=0.5,
        batch_create_delay=0.5,
        moderation_word=None,
    )
    sandbox.sandbox.reset(config)
    (tmp_path / "imagerun.toml").write_text(
        f'[routes."{ROUTE}"]\nbatch_max_lines = 10\nbatch_max_wait = 0.2\n'
    )
    runner = Runner(tmp_path, sandbox)
    runner.submit(120)
    rng = random.Random(16)
    hits = 0
    # Remote batches run on at the provider while the runner is dead, so the work may be done
    # after a few kills: kill until it is, at most ten times.
    for _ in range(10):
        proc = runner.start()
        time.sleep(rng.uniform(0.8, 2.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            hits += 1
        proc.wait(timeout=30)
        if not runner.ledger().runnable():
            break
    assert hits >= 3, f"only {hits} kills hit a live run"
    runner.finish()

    runner.check(sandbox, 120)
    assert len(sandbox_batches(sandbox.sandbox)) == len(runner.remote())


def test_sigterm_while_polling_stops_at_once_and_leaves_nothing_unknown(
    tmp_path: Path, sandbox: SandboxHandle
) -> None:
    config = SandboxConfig(batch_window=60.0, batch_concurrency=1, latency=Latency(mean=0.3))
    sandbox.sandbox.reset(config)
    runner = Runner(tmp_path, sandbox)
    runner.submit(10)
    proc = runner.start()
    deadline = time.monotonic() + 60
    while not any(r["step"] == "submitted" for r in runner.remote()):
        assert proc.poll() is None, runner.log.read_text()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)

    stopped_at = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) in (0, 1)

    assert time.monotonic() - stopped_at < 4.5, "the stop waited for the remote batch"
    ledger = runner.ledger()
    assert {j["state"] for j in ledger.jobs} <= {"running", "succeeded"}
    (row,) = runner.remote()
    assert row["step"] == "submitted"
    runner.finish()
    runner.check(sandbox, 10)
    assert len(sandbox_batches(sandbox.sandbox)) == 1


def test_kill_while_a_large_source_uploads_finds_it_again(
    tmp_path: Path, sandbox: SandboxHandle
) -> None:
    """An edit's source uploaded as a file, killed before its id was recorded: the restart
    finds it by name (no second upload), and it is deleted once the remote batch is applied."""
    sandbox.sandbox.reset(SandboxConfig(file_create_delay=5.0, batch_window=20.0))
    (tmp_path / "imagerun.toml").write_text(f'[routes."{ROUTE}"]\nbatch_max_line_bytes = 20000\n')
    runner = Runner(tmp_path, sandbox)
    source = tmp_path / "large.png"
    source.write_bytes(noise_png(160, 160))
    manifest = tmp_path / "edits.jsonl"
    lines = [f'{{"id": "e{i}", "prompt": "edit {i}", "images": ["{source}"]}}' for i in range(3)]
    manifest.write_text("\n".join(lines) + "\n")
    result = runner.cli("submit", str(manifest), "--route", ROUTE, "--name", "kill")
    assert result.returncode == 0, result.stderr
    uploads = sandbox.sandbox.uploads

    runner.kill_when(lambda: any("-src-" in f.filename for f in uploads))
    sandbox.sandbox.configure(file_create_delay=0.0)
    runner.finish()

    runner.check(sandbox, 3)
    (row,) = runner.remote()
    assert len(json.loads(row["source_file_ids"])) == 1, "one source, uploaded once, for 3 lines"
    assert len(sandbox_batches(sandbox.sandbox)) == 1


def test_a_live_worker_takes_over_the_remote_batch_of_one_that_died(
    tmp_path: Path, sandbox: SandboxHandle
) -> None:
    """Two runs, each driving its own remote batch; one is killed: the other takes its remote
    batch over (no second one for its jobs) and finishes every job."""
    # Lines slow enough (12 × 1 s, one at a time) that the first run's remote batch is still
    # at the provider when it is killed, however long the second run takes to start.
    config = SandboxConfig(batch_window=60.0, batch_concurrency=1, latency=Latency(mean=1.0))
    sandbox.sandbox.reset(config)
    runner = Runner(tmp_path, sandbox)
    runner.submit(12, "kill-a")
    runner.submit(6, "kill-b")
    first = runner.start("kill-a", "--lease", "3")
    deadline = time.monotonic() + 60
    while not any(r["step"] == "submitted" for r in runner.remote()):
        assert first.poll() is None, runner.log.read_text()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    second = runner.start("kill-a", "kill-b", "--lease", "3")
    while len(runner.remote()) < 2:
        assert time.monotonic() < deadline, "the second run opened no remote batch"
        time.sleep(0.02)
    owners = {r["worker_id"] for r in runner.remote()}
    assert len(owners) == 2, "each run drives its own remote batch while both live"
    assert all(r["step"] != "done" for r in runner.remote()), "a remote batch ended too soon"

    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert second.wait(timeout=120) in (0, 1), runner.log.read_text()[-3000:]

    runner.check(sandbox, 18)
    assert len(sandbox_batches(sandbox.sandbox)) == 2
    (survivor,) = {r["worker_id"] for r in runner.remote()}
    assert survivor in owners


def _lasting_batch(sandbox: SandboxHandle) -> None:
    # Lines slow enough (8 × 1 s, one at a time) that the remote batch is still at the
    # provider while the second run starts and looks for remote batches to take over.
    config = SandboxConfig(batch_window=60.0, batch_concurrency=1, latency=Latency(mean=1.0))
    sandbox.sandbox.reset(config)


def _submitted(runner: Runner, proc: subprocess.Popen[bytes]) -> str:
    """Wait until ``proc``'s remote batch is submitted; returns the worker driving it."""
    deadline = time.monotonic() + 60
    while not any(r["step"] == "submitted" for r in runner.remote()):
        assert proc.poll() is None, runner.log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the remote batch was never submitted"
        time.sleep(0.02)
    (row,) = runner.remote()
    return str(row["worker_id"])


def _owners_until_done(runner: Runner, *procs: subprocess.Popen[bytes]) -> set[str]:
    """Every worker seen driving the remote batch until each of ``procs`` has ended."""
    owners: set[str] = set()
    deadline = time.monotonic() + 150
    while any(p.poll() is None for p in procs):
        owners |= {str(r["worker_id"]) for r in runner.remote()}
        assert time.monotonic() < deadline, runner.log.read_text()[-3000:]
        time.sleep(0.05)
    for proc in procs:
        assert proc.returncode in (0, 1), runner.log.read_text()[-3000:]
    return owners | {str(r["worker_id"]) for r in runner.remote()}


def _pause_outside_a_transaction(runner: Runner, proc: subprocess.Popen[bytes]) -> None:
    """SIGSTOP ``proc`` at a moment it holds no transaction open (a run stalled inside one
    would hold the other run's writes back until it went on)."""
    for _ in range(100):
        proc.send_signal(signal.SIGSTOP)
        if _idle(runner):
            return
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.03)
    pytest.fail("the run never paused outside a transaction")


def _idle(runner: Runner) -> bool:
    if runner.pg_url is not None:
        busy = runner.rows(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state <> 'idle'"
        )
        return bool(busy) and busy[0]["n"] == 0
    conn = sqlite3.connect(runner.db, timeout=0)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.rollback()
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_slow_but_alive_driver_keeps_its_remote_batch(
    tmp_path: Path, sandbox: SandboxHandle, database: str, request: pytest.FixtureRequest
) -> None:
    """A driver with a long lease (60 s) is judged by it, not by the lease of a run that
    starts later with a short one (3 s): the later run never takes its remote batch."""
    pg_url = request.getfixturevalue("pg_url") if database == "postgresql" else None
    _lasting_batch(sandbox)
    runner = Runner(tmp_path, sandbox, pg_url)
    runner.submit(8)
    slow = runner.start("--lease", "60")
    owner = _submitted(runner, slow)

    quick = runner.start("--lease", "3")

    assert _owners_until_done(runner, slow, quick) == {owner}
    runner.check(sandbox, 8)
    assert len(sandbox_batches(sandbox.sandbox)) == 1


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_driver_stalled_past_its_lease_is_taken_over_and_records_nothing_more(
    tmp_path: Path, sandbox: SandboxHandle, database: str, request: pytest.FixtureRequest
) -> None:
    """A driver stalls (SIGSTOP) past its own lease while polling: another run takes its
    remote batch over; when the stalled one goes on (SIGCONT) it records nothing more. One
    remote batch, every line applied once (by the taker), the ledger what the sandbox billed."""
    pg_url = request.getfixturevalue("pg_url") if database == "postgresql" else None
    _lasting_batch(sandbox)
    runner = Runner(tmp_path, sandbox, pg_url)
    runner.submit(8)
    stalled = runner.start("--lease", "3")
    owner = _submitted(runner, stalled)
    _pause_outside_a_transaction(runner, stalled)
    try:
        taker = runner.start("--lease", "3")
        deadline = time.monotonic() + 60
        while {str(r["worker_id"]) for r in runner.remote()} == {owner}:
            assert taker.poll() is None, runner.log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the stalled driver's remote batch was not taken"
            time.sleep(0.05)
    finally:
        stalled.send_signal(signal.SIGCONT)

    owners = _owners_until_done(runner, stalled, taker)

    (row,) = runner.remote()
    assert row["worker_id"] != owner
    assert owners == {row["worker_id"]}, "the stalled driver took it back"
    runner.check(sandbox, 8)
    assert len(sandbox_batches(sandbox.sandbox)) == 1
    outputs = runner.ledger().outputs
    assert {o["worker_id"] for o in outputs} == {row["worker_id"]}, "the stalled one applied"
