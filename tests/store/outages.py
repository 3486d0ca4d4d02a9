"""Taking the database away from a running ``imagerun run``: PostgreSQL stopped, SQLite locked.

The PostgreSQL server is the one the whole suite uses: :class:`PostgresServer` always starts
it again (``try``/``finally`` around each outage, and a session fixture plus an ``atexit``
hook as a safety net), and keeps each outage short.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tests.scale.cluster import Cluster, Worker

#: The cluster's name under /etc/postgresql/<version>/.
CLUSTER = "main"
#: Held while a test has the server down (shared by every test session on the machine).
RESTART_LOCK = Path("/tmp/imagerun-test-pg-restart.lock")
#: Holds an exclusive SQLite transaction until told to stop: ``python -c LOCKER FILE SECONDS``.
LOCKER = (
    "import sqlite3, sys, time\n"
    "conn = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)\n"
    "conn.execute('BEGIN EXCLUSIVE')\n"
    "print('locked', flush=True)\n"
    "time.sleep(float(sys.argv[2]))\n"
    "conn.execute('COMMIT')\n"
)


def _pg_version() -> str | None:
    root = Path("/etc/postgresql")
    versions = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    return versions[-1] if versions else None


@dataclass(slots=True)
class Outage:
    """How long the database was away, measured from before the stop to after the start."""

    #: ``time.monotonic()`` just before the stop began, and once the server was started again.
    started: float = 0.0
    ended: float = 0.0
    #: The wall-clock moment the stop began (UTC), to compare with the ledger's timestamps.
    began: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass(frozen=True, slots=True)
class PostgresServer:
    """The local PostgreSQL cluster, stopped and started with ``pg_ctlcluster``."""

    version: str

    @classmethod
    def local(cls) -> PostgresServer | None:
        """The cluster when this machine runs one that we may control, else ``None``."""
        version = _pg_version()
        if version is None or os.geteuid() != 0:
            return None
        return cls(version)

    def _ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = ["pg_ctlcluster", "--skip-systemctl-redirect", self.version, CLUSTER, *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    def running(self) -> bool:
        return self._ctl("status").returncode == 0

    def stop(self) -> None:
        result = self._ctl("stop", "-m", "fast")
        assert result.returncode == 0, result.stderr

    def start(self) -> None:
        if not self.running():
            result = self._ctl("start")
            assert result.returncode == 0 or self.running(), result.stderr

    @contextmanager
    def turn(self) -> Iterator[None]:
        """This session's turn to take the server down (a lock file shared by every test
        session on the machine): two outages never overlap, and one never starts the server
        under the other's feet. Held around :meth:`stopped`."""
        with RESTART_LOCK.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    @contextmanager
    def stopped(self) -> Iterator[Outage]:
        """The server stopped for the duration of the block, started again however it ends;
        the caller holds :meth:`turn`. The outage's times are taken before the stop begins
        and after the start: what happened while the server was stopping is inside it."""
        outage = Outage(started=time.monotonic(), began=datetime.now(UTC))
        self.stop()
        try:
            yield outage
        finally:
            self.start()
            outage.ended = time.monotonic()

    @contextmanager
    def down(self) -> Iterator[Outage]:
        """:meth:`stopped` in this session's :meth:`turn`."""
        with self.turn(), self.stopped() as outage:
            yield outage


def safety_net(server: PostgresServer) -> None:
    """Start the server at interpreter exit too, should a test die between stop and start."""
    atexit.register(server.start)


@contextmanager
def sqlite_locked(path: Path, seconds: float) -> Iterator[subprocess.Popen[str]]:
    """Another process holding ``BEGIN EXCLUSIVE`` on the SQLite file for ``seconds``."""
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(path), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout is not None
        assert locker.stdout.readline().strip() == "locked"
        yield locker
    finally:
        try:
            locker.wait(timeout=seconds + 30)
        finally:
            if locker.poll() is None:
                locker.kill()
                locker.wait(timeout=10)
            if locker.stdout is not None:
                locker.stdout.close()


@dataclass
class FaultCluster(Cluster):
    """A :class:`Cluster` whose commands get extra environment variables (the outage knobs)."""

    extra: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        base: dict[str, str] = Cluster.env.fget(self)  # type: ignore[attr-defined]
        return {**base, **self.extra}

    def start_again(self, worker: Worker, *run_args: str) -> Worker:
        """Another ``imagerun run`` on the data directory ``worker`` wrote to."""
        log = self.root / f"worker-{len(self.workers)}.log"
        command = [sys.executable, "-m", "runner.cli", "--data", str(worker.data), "run"]
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*command, *run_args], env=self.env, cwd=self.root, stdout=out, stderr=out
            )
        again = Worker(index=len(self.workers), data=worker.data, process=process, log=log)
        self.workers.append(again)
        return again


@dataclass(frozen=True, slots=True)
class PrivatePostgres:
    """A throwaway PostgreSQL cluster of our own (``initdb`` in a temporary directory, run as
    the ``postgres`` user on a free loopback port): stopping it disturbs no other test."""

    root: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        bindir = Path("/usr/lib/postgresql") / (_pg_version() or "") / "bin"
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        command = (
            f"{bindir}/pg_ctl -D {self.root}/data -o '{options}' -l {self.root}/log "
            f"-m fast -w {' '.join(args)}"
        )
        subprocess.run(["su", "postgres", "-c", command], check=True, capture_output=True)

    @classmethod
    def create(cls, root: Path, port: int) -> PrivatePostgres:
        bindir = Path("/usr/lib/postgresql") / (_pg_version() or "") / "bin"
        root.mkdir(parents=True, exist_ok=True)
        shutil.chown(root, "postgres")
        subprocess.run(
            ["su", "postgres", "-c", f"{bindir}/initdb -D {root}/data -A trust -U postgres"],
            check=True,
            capture_output=True,
        )
        server = cls(root, port)
        server.start()
        return server

    def start(self) -> None:
        self._ctl("start")

    def stop(self) -> None:
        self._ctl("stop")
