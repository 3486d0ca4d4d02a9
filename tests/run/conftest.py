"""Fixtures of the engine tests: the wire tests' own, for the lanes' loopback servers."""

from tests.http.conftest import _no_proxy_env, tls_pair

__all__ = ["_no_proxy_env", "tls_pair"]
