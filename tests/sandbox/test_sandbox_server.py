"""running_sandbox: a real server on a free loopback port that stops promptly."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from runner.sandbox import FaultKind, FaultRule, SandboxConfig, running_sandbox

from .helpers import OPENAI_KEY, auth


def test_handle_urls_point_at_a_listening_server() -> None:
    with running_sandbox() as handle:
        assert handle.url == f"http://127.0.0.1:{handle.port}"
        assert handle.openai_base.endswith("/openai/v1")
        assert handle.laozhang_base.endswith("/laozhang/v1")
        response = httpx.get(f"{handle.url}/_sandbox/state", timeout=5)
        assert response.status_code == 200
        assert "server" not in response.headers  # no "uvicorn" banner
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", handle.port), timeout=1):
        pass


def test_a_hung_request_does_not_hold_up_the_stop() -> None:
    config = SandboxConfig(
        fault_rules=(FaultRule(match="#HANG#", kind=FaultKind.HANG),), hang_seconds=60
    )
    answers: list[int] = []
    with running_sandbox(config) as handle:

        def call() -> None:
            response = httpx.post(
                f"{handle.openai_base}/images/generations",
                json={"model": "gpt-image-2", "prompt": "#HANG#"},
                headers=auth(OPENAI_KEY),
                timeout=30,
            )
            answers.append(response.status_code)

        caller = threading.Thread(target=call)
        caller.start()
        deadline = time.monotonic() + 5
        while not handle.sandbox.inflight() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert handle.sandbox.inflight() == 1
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 2.0
    caller.join(timeout=5)
    assert answers == [503]
    [record] = handle.sandbox.requests()
    assert (record.status, record.outcome) == (503, "server_error")


def test_two_sandboxes_run_side_by_side() -> None:
    with running_sandbox() as first, running_sandbox() as second:
        assert first.port != second.port
        for handle in (first, second):
            response = httpx.post(
                f"{handle.openai_base}/images/generations",
                json={"model": "gpt-image-2", "prompt": "x"},
                headers=auth(OPENAI_KEY),
                timeout=10,
            )
            assert response.status_code == 200
        assert len(first.sandbox.requests()) == len(second.sandbox.requests()) == 1
