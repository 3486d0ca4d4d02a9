"""Fixtures of the wire tests: no proxy from the environment, a TLS pair made at test time."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from .loopback import certificate, server_tls

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR")


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Proxies from the environment running the tests do not apply."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def tls_pair(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting it) for a fresh self-signed certificate."""
    cert = certificate(tmp_path)
    return server_tls(cert), ssl.create_default_context(cafile=str(cert))
