"""Opening a route's lane: its HTTP clients, gate, retry policy and adapter.

A run opens one lane per route (:func:`open_lane`); a billing probe opens the same clients
(:func:`open_clients`) and assembles a fresh lane around them for each probe
(:func:`assemble`). Either way every client shares the caller's TLS context (each costs
20-40 ms to build) and is bounded by the lane's concurrency.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Protocol

import httpx

from runner.abc import Dialect
from runner.errors import ConfigError
from runner.http.client import ApiClient
from runner.http.download import fetch_client
from runner.routes import Route
from runner.run.gate import Gate, RouteGate
from runner.run.lane import Lane
from runner.run.pace_keeper import PaceKeeper, PaceStore
from runner.run.retry import RetryPolicy
from runner.run.shared_gate import SharedGate
from runner.run.sources import SourceLoader
from runner.shapes import ADAPTERS

#: Connections a lane may open beyond its concurrency (source and result downloads).
SPARE_CONNECTIONS = 4


class GateStore(PaceStore, Dialect, Protocol):
    """What choosing a route's gate needs of the store."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LaneClients:
    """A lane's two HTTP clients."""

    #: Carries the route's credentials: only ever used for the provider's own endpoints.
    client: ApiClient
    #: No credentials: for source URLs and result URLs on other hosts.
    fetch: httpx.AsyncClient


def require_api_key(route: Route, environ: Mapping[str, str]) -> str:
    """The route's API key from ``environ``.

    Raises:
        ConfigError: the key's environment variable is not set.
    """
    key = route.api_key(environ)
    if key is None:
        raise ConfigError(
            f"route {route.name!r} needs an API key: set the environment variable "
            f"{route.api_key_env}"
        )
    return key


def retry_policy(route: Route, *, scale: float = 1.0) -> RetryPolicy:
    """The route's retry schedule (``scale`` multiplies every wait; tests set 0)."""
    return RetryPolicy(max_attempts=route.max_attempts, deadline=route.deadline, scale=scale)


async def open_gate(store: GateStore, route: Route, rpm: int | None = None) -> Gate:
    """A started gate for ``route`` at ``rpm`` (default: the route's own).

    The rate is a ceiling; the gate starts there when the user gave it (``rpm``, or the
    route's configured ``rpm``), else low, probing upward. On PostgreSQL every worker process
    shares the route's schedule, pace and 429 pause; elsewhere the gate is this process's own.
    Either way the pace learned is kept in the store for the next run.
    """
    told = rpm is not None or route.rpm_told
    ceiling = rpm or route.rpm
    gate: Gate = (
        SharedGate(store, route.name, ceiling, told=told)
        if store.dialect == "postgresql"
        else RouteGate(ceiling, told=told, keeper=PaceKeeper(store, route.name))
    )
    await gate.start()
    return gate


async def open_clients(
    stack: AsyncExitStack,
    route: Route,
    *,
    api_key: str,
    concurrency: int,
    tls: ssl.SSLContext,
    call_timeout: float | None = None,
) -> LaneClients:
    """Open a lane's clients; ``stack`` closes them.

    Args:
        stack: closes the clients when it exits.
        route: the route called.
        api_key: the route's key (on the API client only).
        concurrency: requests the lane sends at once (its connection pool's size).
        tls: the TLS context every client of the caller shares.
        call_timeout: a read timeout for API calls other than the route's own.
    """
    limits = httpx.Limits(
        max_connections=concurrency + SPARE_CONNECTIONS, max_keepalive_connections=concurrency
    )
    timeout = httpx.Timeout(route.timeout, connect=route.connect_timeout)
    call = httpx.Timeout(call_timeout or route.timeout, connect=route.connect_timeout)
    client = await stack.enter_async_context(
        ApiClient(route.base_url, api_key=api_key, timeout=call, limits=limits, tls=tls)
    )
    fetch = await stack.enter_async_context(fetch_client(tls, limits, timeout))
    return LaneClients(client=client, fetch=fetch)


def assemble(
    route: Route,
    clients: LaneClients,
    *,
    batch_ids: list[str],
    concurrency: int,
    gate: Gate,
    policy: RetryPolicy,
) -> Lane:
    """A lane over clients already open (a new source cache, the route's adapter)."""
    return Lane(
        route=route,
        batch_ids=batch_ids,
        concurrency=concurrency,
        gate=gate,
        adapter=ADAPTERS[route.shape],
        client=clients.client,
        fetch=clients.fetch,
        loader=SourceLoader(clients.fetch),
        policy=policy,
    )


async def open_lane(
    stack: AsyncExitStack,
    route: Route,
    *,
    api_key: str,
    batch_ids: list[str],
    concurrency: int,
    gate: Gate,
    policy: RetryPolicy,
    tls: ssl.SSLContext,
) -> Lane:
    """Open ``route``'s clients on ``stack`` and assemble its lane around them."""
    clients = await open_clients(stack, route, api_key=api_key, concurrency=concurrency, tls=tls)
    return assemble(
        route, clients, batch_ids=batch_ids, concurrency=concurrency, gate=gate, policy=policy
    )
