"""Fixtures for the remote batch tests: the sandbox as a real server, a world per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runner.sandbox import SandboxConfig, SandboxHandle, running_sandbox
from tests.e2e.harness import World

MakeWorld = Callable[..., World]
ROUTE = "sandbox-openai-batch"


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxHandle]:
    with running_sandbox(SandboxConfig()) as handle:
        yield handle


@pytest.fixture
def world(server: SandboxHandle, tmp_path: Path, sqlite_url: str) -> MakeWorld:
    """``world(SandboxConfig(...), config_text=...)``: a fresh sandbox state, db and dir."""

    def make(
        config: SandboxConfig | None = None,
        *,
        db_url: str | None = None,
        env: dict[str, str] | None = None,
        config_text: str = "",
    ) -> World:
        server.sandbox.reset(config or SandboxConfig(batch_window=20.0))
        return World(
            handle=server,
            root=tmp_path,
            db_url=db_url or sqlite_url,
            env=dict(env or {}),
            config_text=config_text,
        )

    return make
