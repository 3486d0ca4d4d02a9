"""``@copilotkit/aimock``, an OpenAI-compatible mock server from npm, as a peer we did not write.

``scripts/test`` installs the pinned version with npm into ``.cache/peers``; ``IMAGERUN_AIMOCK``
names another ``aimock`` executable. Without either the tests skip, unless ``CI`` is set: there a
missing peer is an error, so the tests cannot silently vanish.

The server answers image calls from a fixture file (one image for every prompt), mints an
``X-Request-Id`` for each request, keeps a journal of every request it received (chaos faults
included) at ``/__aimock/journal``, and injects faults with its ``--chaos-*`` switches.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

#: The version ``scripts/test`` installs; the fixture format and chaos switches are this one's.
AIMOCK_VERSION = "1.43.0"
REPO = Path(__file__).resolve().parents[2]
INSTALLED = REPO / ".cache" / "peers" / "node_modules" / ".bin" / "aimock"
START_TIMEOUT = 20.0


def aimock_executable() -> str:
    """The ``aimock`` command, or skip (fail under CI) when it is not installed."""
    named = os.environ.get("IMAGERUN_AIMOCK")
    found = named or (str(INSTALLED) if INSTALLED.exists() else shutil.which("aimock"))
    if found and shutil.which("node"):
        return found
    message = (
        f"@copilotkit/aimock@{AIMOCK_VERSION} is not installed "
        f"(npm install --prefix .cache/peers @copilotkit/aimock@{AIMOCK_VERSION})"
    )
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI is set, so the aimock tests must run", pytrace=False)
    pytest.skip(message)


@dataclass(frozen=True, slots=True)
class Aimock:
    """A running aimock server."""

    url: str

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL a route points at."""
        return f"{self.url}/v1"

    def journal(self) -> list[dict[str, Any]]:
        """Every request the server received, in order (chaos faults included)."""
        response = httpx.get(f"{self.url}/__aimock/journal", timeout=10)
        response.raise_for_status()
        entries: list[dict[str, Any]] = response.json()
        return [e for e in entries if str(e.get("path", "")).startswith("/v1/images/")]


def image_fixture(path: Path, png: bytes) -> Path:
    """A fixture file answering every image call (generation or edit) with ``png``."""
    image = {"b64Json": base64.b64encode(png).decode()}
    fixture = {"match": {"endpoint": "image"}, "response": {"images": [image]}}
    path.write_text(json.dumps({"fixtures": [fixture]}), "utf-8")
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_aimock(fixtures: Path, chaos: Mapping[str, float] | None = None) -> Iterator[Aimock]:
    """Start aimock (the ``llmock`` CLI, which takes the chaos switches) and stop it after."""
    executable = aimock_executable()
    llmock = str(Path(executable).with_name("llmock"))
    port = _free_port()
    args = [llmock, "--port", str(port), "--host", "127.0.0.1", "--fixtures", str(fixtures)]
    args += ["--log-level", "warn", "--journal-max", "0"]
    for switch, rate in (chaos or {}).items():
        args += [f"--chaos-{switch}", str(rate)]
    log = fixtures.with_suffix(".log")
    server = Aimock(url=f"http://127.0.0.1:{port}")
    with (
        log.open("wb") as out,
        subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT) as proc,
    ):
        try:
            _wait_until_up(proc, server, log)
            yield server
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait_until_up(proc: subprocess.Popen[bytes], server: Aimock, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = log.read_text(errors="replace")
            raise RuntimeError(f"aimock exited with {proc.returncode}: {output}")
        try:
            httpx.get(f"{server.url}/__aimock/journal", timeout=1).raise_for_status()
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"aimock did not start within {START_TIMEOUT} s")
