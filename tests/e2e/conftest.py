"""Fixtures for the end-to-end tests: one real sandbox server per module, a world per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runner.sandbox import SandboxConfig, SandboxHandle, running_sandbox

from .harness import World

MakeWorld = Callable[..., World]


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxHandle]:
    """The sandbox as a real HTTP server on loopback, shared by a module's tests."""
    with running_sandbox(SandboxConfig()) as handle:
        yield handle


@pytest.fixture
def world(server: SandboxHandle, tmp_path: Path, sqlite_url: str) -> MakeWorld:
    """``world(SandboxConfig(...), env={...}, config_text=...)``: a fresh sandbox state, db, dir."""

    def make(
        config: SandboxConfig | None = None,
        *,
        env: dict[str, str] | None = None,
        config_text: str = "",
    ) -> World:
        server.sandbox.reset(config or SandboxConfig())
        return World(
            handle=server,
            root=tmp_path,
            db_url=sqlite_url,
            env=dict(env or {}),
            config_text=config_text,
        )

    return make
