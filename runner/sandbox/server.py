"""Serving the sandbox over real HTTP: blocking (the CLI) or in a background thread (tests).

Both use uvicorn on the asyncio loop with the h11 protocol subclass from
:mod:`runner.sandbox.connections` (so reset and truncation faults reach the socket), no
access log, and a short graceful-shutdown window so a hung request cannot hold up the exit.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette

from runner.sandbox.app import create_app
from runner.sandbox.config import SandboxConfig
from runner.sandbox.connections import protocol_class
from runner.sandbox.state import Sandbox

DEFAULT_HOST = "127.0.0.1"
#: The port the built-in ``sandbox-*`` routes point at (``runner.routes.catalog``).
DEFAULT_PORT = 8765
#: Seconds in-flight requests get when the server stops, before they are cancelled.
SHUTDOWN_GRACE_S = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxHandle:
    """A running sandbox.

    Attributes:
        url: ``http://127.0.0.1:PORT``.
        sandbox: the live state (request log, balances, config).
    """

    url: str
    sandbox: Sandbox

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self.url.rsplit(":", 1)[1])

    @property
    def openai_base(self) -> str:
        """Base URL of the official profile (``…/openai/v1``)."""
        return f"{self.url}/openai/v1"

    @property
    def laozhang_base(self) -> str:
        """Base URL of the gateway profile (``…/laozhang/v1``)."""
        return f"{self.url}/laozhang/v1"


class _SandboxServer(uvicorn.Server):
    """uvicorn, cutting short the sandbox's in-flight requests before its graceful shutdown."""

    def __init__(self, config: uvicorn.Config, sandbox: Sandbox) -> None:
        super().__init__(config)
        self._sandbox = sandbox

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # A hang fault would otherwise keep its connection open until uvicorn cancels the
        # task after the grace period (and logs it as an application error).
        self._sandbox.stop_inflight()
        await super().shutdown(sockets)


def _server(app: Starlette, host: str, port: int) -> uvicorn.Server:
    sandbox: Sandbox = app.state.sandbox
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="asyncio",
        http=protocol_class(sandbox.connections),
        lifespan="off",
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )
    return _SandboxServer(config, sandbox)


def serve(config: SandboxConfig, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Run the sandbox in the foreground until interrupted (Ctrl-C / SIGTERM)."""
    _server(create_app(config), host, port).run()


def _wait_accepting(host: str, port: int, thread: threading.Thread, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not thread.is_alive():
            raise RuntimeError("the sandbox server thread exited during startup")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the sandbox did not accept connections within {timeout}s"
                ) from None
            time.sleep(0.02)


@contextmanager
def running_sandbox(
    config: SandboxConfig | None = None,
    host: str = DEFAULT_HOST,
    port: int = 0,
    *,
    startup_timeout: float = 10.0,
) -> Iterator[SandboxHandle]:
    """Serve the sandbox from a background thread for the duration of the ``with`` block.

    Args:
        config: the knobs (default ``SandboxConfig()``).
        host: interface to listen on (loopback by default).
        port: 0 picks a free port.
        startup_timeout: seconds to wait for the server to accept connections.

    Yields:
        A :class:`SandboxHandle` with the URLs and the live state.
    """
    app = create_app(config)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    bound_port = listener.getsockname()[1]
    server = _server(app, host, bound_port)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [listener]}, name="imagerun-sandbox", daemon=True
    )
    thread.start()
    try:
        _wait_accepting(host, bound_port, thread, startup_timeout)
        yield SandboxHandle(url=f"http://{host}:{bound_port}", sandbox=app.state.sandbox)
    finally:
        server.should_exit = True
        thread.join(timeout=SHUTDOWN_GRACE_S + 5)
        listener.close()
