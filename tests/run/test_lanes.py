"""Opening a lane: clients on the caller's TLS context, a pool bounded by the lane's
concurrency, closed with the caller's stack; the gate that fits the database; the route's key
and retry schedule."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import replace

import anyio
import httpx
import pytest

from runner.errors import ConfigError
from runner.routes import Route, load_catalog
from runner.run.gate import RouteGate
from runner.run.lanes import (
    SPARE_CONNECTIONS,
    assemble,
    open_clients,
    open_gate,
    open_lane,
    require_api_key,
    retry_policy,
)
from runner.run.retry import RetryPolicy
from runner.run.shared_gate import SharedGate
from runner.shapes import ADAPTERS, PreparedRequest
from runner.store import Store
from tests.http.loopback import Peer, Server, response, serve

pytestmark = pytest.mark.anyio

KEY = "sk-lane-test"


class Counting:
    """A keep-alive handler that answers after a moment and counts open connections."""

    def __init__(self) -> None:
        self.open = 0
        self.peak = 0

    async def __call__(self, peer: Peer) -> None:
        self.open += 1
        self.peak = max(self.peak, self.open)
        try:
            while await peer.request() is not None:
                await anyio.sleep(0.05)
                await peer.send(response(b"{}", headers=[("Content-Type", "application/json")]))
        finally:
            self.open -= 1


@pytest.fixture
async def tls_server(
    tls_pair: tuple[ssl.SSLContext, ssl.SSLContext],
) -> AsyncIterator[tuple[Server, Counting]]:
    handler = Counting()
    async with serve(handler, tls=tls_pair[0]) as server:
        yield server, handler


def route_at(url: str) -> Route:
    return replace(load_catalog(environ={}).get("openai"), base_url=url + "/v1")


async def test_a_lanes_clients_trust_what_the_callers_tls_context_trusts(
    tls_server: tuple[Server, Counting], tls_pair: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server, _ = tls_server
    route = route_at(server.url)
    async with AsyncExitStack() as stack:
        lane = await open_lane(
            stack,
            route,
            api_key=KEY,
            batch_ids=["b1"],
            concurrency=2,
            gate=RouteGate(route.rpm),
            policy=RetryPolicy(),
            tls=tls_pair[1],
        )
        with anyio.fail_after(10):
            call = lane.client.request(
                PreparedRequest(endpoint="/images/generations", json={}), "ir-1"
            )
            answer = await lane.client.send(call)
            await answer.aread()
            await answer.aclose()
            fetched = await lane.fetch.get(server.url + "/result.png")
    assert answer.status_code == 200
    assert fetched.status_code == 200
    api, download = server.requests
    # The key goes to the provider's endpoints only, never with a download.
    assert (api.target, api.headers["authorization"]) == ("/v1/images/generations", f"Bearer {KEY}")
    assert (download.target, "authorization" in download.headers) == ("/result.png", False)


async def test_a_client_without_the_callers_context_does_not_trust_the_server(
    tls_server: tuple[Server, Counting],
) -> None:
    """The counterpart of the test above: the certificate is trusted by that context alone."""
    server, _ = tls_server
    async with httpx.AsyncClient() as plain:
        with pytest.raises(httpx.ConnectError):
            await plain.get(server.url + "/result.png")


async def test_a_lanes_connections_are_bounded_by_its_concurrency(
    tls_server: tuple[Server, Counting], tls_pair: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server, handler = tls_server
    concurrency = 2
    async with AsyncExitStack() as stack:
        clients = await open_clients(
            stack, route_at(server.url), api_key=KEY, concurrency=concurrency, tls=tls_pair[1]
        )
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for n in range(24):
                    tg.start_soon(clients.fetch.get, f"{server.url}/{n}.png")
    assert len(server.requests) == 24
    assert handler.peak == concurrency + SPARE_CONNECTIONS


async def test_the_callers_stack_closes_a_lanes_clients(
    tls_pair: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    async with AsyncExitStack() as stack:
        clients = await open_clients(
            stack, route_at("https://127.0.0.1:9"), api_key=KEY, concurrency=1, tls=tls_pair[1]
        )
        assert not clients.fetch.is_closed
    assert clients.fetch.is_closed


async def test_lanes_assembled_over_one_set_of_clients_share_them(
    tls_pair: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    route = route_at("https://127.0.0.1:9")
    async with AsyncExitStack() as stack:
        clients = await open_clients(
            stack, route, api_key=KEY, concurrency=1, tls=tls_pair[1], call_timeout=5.0
        )
        gates = RouteGate(route.rpm), RouteGate(route.rpm)
        first, second = (
            assemble(
                route,
                clients,
                batch_ids=["b1"],
                concurrency=1,
                gate=gate,
                policy=RetryPolicy(max_attempts=1),
            )
            for gate in gates
        )
    assert (
        (first.client, first.fetch)
        == (second.client, second.fetch)
        == (
            clients.client,
            clients.fetch,
        )
    )
    # Each lane has a gate and a source cache of its own.
    assert (first.gate, second.gate) == gates
    assert first.loader is not second.loader
    assert first.adapter is ADAPTERS[route.shape]
    assert first.policy == RetryPolicy(max_attempts=1)


async def test_the_gate_is_shared_through_postgresql_and_local_elsewhere(store: Store) -> None:
    route = load_catalog(environ={}).get("openai")
    gate = await open_gate(store, route, 6000)
    expected = SharedGate if store.dialect == "postgresql" else RouteGate
    assert type(gate) is expected
    assert gate.rpm == 6000
    with anyio.fail_after(5):
        await gate.admit()  # started: a shared gate's schedule row exists


def test_a_missing_api_key_names_its_variable() -> None:
    route = load_catalog(environ={}).get("openai")
    with pytest.raises(ConfigError, match=route.api_key_env):
        require_api_key(route, {})
    assert require_api_key(route, {route.api_key_env: KEY}) == KEY


def test_the_retry_schedule_is_the_routes() -> None:
    route = replace(load_catalog(environ={}).get("openai"), max_attempts=3, deadline=90.0)
    assert retry_policy(route, scale=0.0) == RetryPolicy(max_attempts=3, deadline=90.0, scale=0.0)
