"""Fixtures of the engine tests: the wire tests' own, for the lanes' loopback servers, and two
stores on one PostgreSQL database for the shared gates."""

from collections.abc import AsyncIterator

import pytest

from runner.store import Store
from tests.http.conftest import _no_proxy_env, tls_pair

__all__ = ["_no_proxy_env", "pg_stores", "tls_pair"]


@pytest.fixture
async def pg_stores(pg_url: str) -> AsyncIterator[tuple[Store, Store]]:
    """Two stores on one PostgreSQL database, as two worker processes would hold."""
    first = await Store.open(pg_url)
    second = await Store.open(pg_url, migrate=False)
    try:
        yield first, second
    finally:
        await second.close()
        await first.close()
