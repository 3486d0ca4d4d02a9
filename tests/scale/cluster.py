"""A cluster in one test: one database, the sandbox as a real server, N ``imagerun run`` processes.

Every worker is a real child process (``python -m runner.cli run``) with its own data
directory, as it would be on its own machine; they meet only in the database. A worker can be
started "on another machine" (:data:`OTHER_HOST`): it then reports another host name, so the
survivors cannot tell from its pid that it died and must wait for its leases to run out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.cli.demo import sandbox_environ
from runner.sandbox import Latency, RequestRecord, SandboxConfig, SandboxHandle, running_sandbox

ROUTE = "sandbox-laozhang"
KEY = "sk-default-scale-test"
#: Longest any one wait in these tests may take: past it, something hangs.
DEADLINE = 90.0

#: Runs the CLI with ``socket.gethostname`` answering ``argv[1]``: a worker on another host.
_HOST_SHIM = (
    "import socket, sys\n"
    "host = sys.argv.pop(1)\n"
    "socket.gethostname = lambda: host\n"
    "from runner.cli import main\n"
    "main(prog_name='imagerun')\n"
)
OTHER_HOST = "machine-b"


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        # Not faster: a condition may read the database through a new engine each time, in
        # the process whose thread serves the sandbox the workers call.
        time.sleep(0.2)


@dataclass(slots=True)
class Worker:
    """One ``imagerun run`` child process and the data directory it writes to."""

    index: int
    data: Path
    process: subprocess.Popen[bytes]
    log: Path
    host: str | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def finish(self, timeout: float = DEADLINE) -> int:
        """Wait for the worker to exit by itself; its exit code (0 clean, 1 some not done)."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise AssertionError(
                f"worker {self.index} still running after {timeout:.0f} s"
            ) from None
        assert code in (0, 1), f"worker {self.index} exited {code}:\n{self.output()[-3000:]}"
        return code

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass(slots=True)
class Cluster:
    """The test's directory, database URL and sandbox, and the workers started on them."""

    root: Path
    db_url: str
    handle: SandboxHandle
    config_text: str = ""
    workers: list[Worker] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("IMAGERUN_")}
        env = sandbox_environ(self.handle, base)
        env.update({"IMAGERUN_DB": self.db_url, "SANDBOX_LAOZHANG_API_KEY": KEY})
        if self.config_text:
            config = self.root / "imagerun.toml"
            config.write_text(self.config_text, "utf-8")
            env["IMAGERUN_CONFIG"] = str(config)
        return env

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "runner.cli", *args],
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )

    def submit(self, name: str, jobs: int) -> str:
        """Submit ``jobs`` tiny generations as batch ``name`` (once, from "one machine")."""
        manifest = self.root / f"{name}.jsonl"
        manifest.write_text(
            "".join(
                json.dumps({"id": f"{name}-{i}", "prompt": f"scale-out render {name} {i}"}) + "\n"
                for i in range(jobs)
            )
        )
        result = self.cli("submit", str(manifest), "--route", ROUTE, "--name", name)
        assert result.returncode == 0, result.stderr
        return name

    def start(self, *run_args: str, host: str | None = None) -> Worker:
        """Start ``imagerun run RUN_ARGS`` with its own ``--data`` directory."""
        index = len(self.workers)
        data = self.root / f"data-{index}"
        log = self.root / f"worker-{index}.log"
        cli = ["-c", _HOST_SHIM, host] if host else ["-m", "runner.cli"]
        command = [sys.executable, *cli, "--data", str(data), "run", *run_args]
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, env=self.env, cwd=self.root, stdout=out, stderr=subprocess.STDOUT
            )
        worker = Worker(index=index, data=data, process=process, log=log, host=host)
        self.workers.append(worker)
        return worker

    def start_many(self, count: int, *run_args: str) -> list[Worker]:
        return [self.start(*run_args) for _ in range(count)]

    def finish_all(self, workers: Sequence[Worker] | None = None) -> list[int]:
        return [w.finish() for w in (self.workers if workers is None else workers)]

    def requests(self) -> list[RequestRecord]:
        """Image API calls the sandbox received, in arrival order."""
        return self.handle.sandbox.requests()

    def status(self) -> dict[str, Any]:
        result = self.cli("status", "--json")
        assert result.returncode == 0, result.stderr
        status: dict[str, Any] = json.loads(result.stdout)
        return status

    def stop_all(self) -> None:
        """Kill whatever is still running (cleanup after a failed test)."""
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait(timeout=10)


def fast_sandbox(*, seed: int, rpm: int | None = None) -> AbstractContextManager[SandboxHandle]:
    """The sandbox these tests use: 20–50 ms per request, tiny images, optionally rate limited."""
    config = SandboxConfig(latency=Latency(mean=0.035, jitter=0.015), rpm=rpm, tiny=True, seed=seed)
    return running_sandbox(config)


def route_config(**fields: object) -> str:
    """``imagerun.toml`` text setting fields of the sandbox route."""
    lines = [f'[routes."{ROUTE}"]', *(f"{k} = {json.dumps(v)}" for k, v in fields.items())]
    return "\n".join(lines) + "\n"
