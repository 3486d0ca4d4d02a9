"""Fixtures for the billing tests: one real sandbox server per module, a world per test."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from runner import app
from runner.cli.demo import sandbox_environ
from runner.config import Settings, load_settings
from runner.run.worker import RunOptions
from runner.sandbox import RequestRecord, SandboxConfig, SandboxHandle, running_sandbox
from runner.store import BatchInfo, Store


@dataclass(slots=True, kw_only=True)
class World:
    """One test's directory, database, settings and the (shared) sandbox server."""

    handle: SandboxHandle
    root: Path
    db_url: str
    config_text: str = ""

    def settings(self) -> Settings:
        config = self.root / "imagerun.toml"
        config.write_text(self.config_text, "utf-8")
        return load_settings(
            config=config,
            db=self.db_url,
            data=self.root / "data",
            environ=sandbox_environ(self.handle, {}),
        )

    async def submit(
        self,
        lines: Sequence[Mapping[str, Any]],
        route: str,
        name: str = "jobs",
        budget: float | None = None,
    ) -> BatchInfo:
        path = self.root / f"{name}.jsonl"
        path.write_text("".join(json.dumps(dict(line)) + "\n" for line in lines), "utf-8")
        result = await app.submit(self.settings(), path, route, name=name, budget_usd=budget)
        assert result.added == len(lines)
        return result.batch

    async def run(self, batches: Sequence[str] = (), **options: Any) -> app.RunResult:
        defaults: dict[str, Any] = {"retry_scale": 0.0, "handle_signals": False}
        return await app.run(self.settings(), batches, RunOptions(**(defaults | options)))

    async def store(self) -> Store:
        return await Store.open(self.db_url)

    def requests(self) -> list[RequestRecord]:
        return self.handle.sandbox.requests()

    async def settled(self, client_ids: set[str], timeout: float = 10.0) -> list[RequestRecord]:
        """The sandbox's log once every request in ``client_ids`` has settled there.

        A request the client abandoned (a timeout) settles on the server a moment after the
        client moved on, so the log is polled, with a deadline.
        """
        with anyio.fail_after(timeout):
            while True:
                seen = self.requests()
                if client_ids <= {r.client_request_id for r in seen}:
                    return seen
                await anyio.sleep(0.02)


MakeWorld = Callable[..., World]


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxHandle]:
    with running_sandbox(SandboxConfig()) as handle:
        yield handle


@pytest.fixture
def world(server: SandboxHandle, tmp_path: Path, sqlite_url: str) -> MakeWorld:
    """``world(SandboxConfig(...), config_text=...)``: fresh sandbox state, database, dir."""

    def make(config: SandboxConfig | None = None, *, config_text: str = "") -> World:
        server.sandbox.reset(config or SandboxConfig())
        return World(handle=server, root=tmp_path, db_url=sqlite_url, config_text=config_text)

    return make
