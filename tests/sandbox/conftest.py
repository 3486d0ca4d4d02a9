"""Fixtures for the sandbox tests: an in-process client, a fake clock, a shared real server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest

from runner.sandbox import SandboxConfig, SandboxHandle, create_app, running_sandbox
from runner.sandbox.state import Sandbox

from .helpers import FakeClock, InProcess


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def in_process() -> InProcess:
    """``async with in_process(config, clock=…) as (client, sandbox)``: the app over ASGI."""

    @asynccontextmanager
    async def open_client(
        config: SandboxConfig | None = None, clock: FakeClock | None = None
    ) -> AsyncIterator[tuple[httpx.AsyncClient, Sandbox]]:
        app = create_app(config or SandboxConfig(), clock=clock)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sandbox.test") as client:
            yield client, app.state.sandbox

    return open_client


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxHandle]:
    """One real server per test module; tests reset it to the config they need."""
    with running_sandbox(SandboxConfig()) as handle:
        yield handle


@pytest.fixture
def live(server: SandboxHandle) -> SandboxHandle:
    """The module's real server, reset to defaults for this test."""
    server.sandbox.reset(SandboxConfig())
    return server
