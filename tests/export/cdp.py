"""A tiny Chrome DevTools Protocol client over ``--remote-debugging-pipe``.

Chromium reads protocol messages from file descriptor 3 and writes its replies and events to
descriptor 4, each a JSON text ended by a NUL byte. That needs nothing but two OS pipes: no
websocket library, no chromedriver, no download at test time.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import selectors
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Self

#: Where to look for a browser, first match wins; ``IMAGERUN_CHROMIUM`` overrides.
CANDIDATES = (
    "/usr/lib/chromium/chromium",  # Debian's real binary behind the /usr/bin wrapper script
    "chromium",
    "chromium-browser",
    "google-chrome",
)
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--remote-debugging-pipe",
)

_TRAMPOLINE = """
import fcntl, os, sys
read_end, write_end = (fcntl.fcntl(int(fd), fcntl.F_DUPFD, 10) for fd in sys.argv[1:3])
os.dup2(read_end, 3)
os.dup2(write_end, 4)
os.execv(sys.argv[3], sys.argv[3:])
"""


def find_chromium() -> str | None:
    """The Chromium binary to drive, or ``None`` when this machine has none."""
    override = os.environ.get("IMAGERUN_CHROMIUM")
    if override:
        return override
    for candidate in CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


class CDPError(RuntimeError):
    """The browser answered a command with an error, or did not answer in time."""


class Browser:
    """A headless Chromium, driven over the DevTools pipe. Use as a context manager."""

    def __init__(self, binary: str, profile: Path, log: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # A Python trampoline moves our two pipe ends to the descriptors Chromium expects and
        # execs it (dash, the usual /bin/sh, cannot name descriptors above 9).
        command = [
            sys.executable,
            "-c",
            _TRAMPOLINE,
            str(to_browser_r),
            str(from_browser_w),
            binary,
            *FLAGS,
            f"--user-data-dir={profile}",
            "about:blank",
        ]
        with open(log, "wb") as stderr:
            self._process = subprocess.Popen(
                command,
                pass_fds=(to_browser_r, from_browser_w),
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
            )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._from_browser, selectors.EVENT_READ)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Send one command and wait (bounded) for its reply; events seen meanwhile are kept."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline, f"reply to {method}")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise CDPError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self.events.append(reply)

    def wait_event(self, method: str, *, timeout: float = 30.0) -> dict[str, Any]:
        """The first event named ``method`` (already received or arriving within ``timeout``)."""
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + timeout
        while True:
            event = self._read(deadline, f"event {method}")
            self.events.append(event)
            if event.get("method") == method:
                return event

    def _read(self, deadline: float, what: str) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not self._selector.select(left):
                raise CDPError(f"no {what} from the browser in time")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise CDPError(f"the browser exited while waiting for {what}")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        message: dict[str, Any] = json.loads(raw)
        return message

    def open_page(self, width: int = 1280, height: int = 900) -> str:
        """A new tab with runtime, log and page events on; returns its session id."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})
        sid: str = session["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.call(f"{domain}.enable", session=sid)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=sid,
        )
        return sid

    def evaluate(self, session: str, expression: str, *, timeout: float = 30.0) -> Any:
        """Run ``expression`` in the page (awaiting a promise) and return its JSON value."""
        reply = self.call(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            session=session,
            timeout=timeout,
        )
        if "exceptionDetails" in reply:
            raise CDPError(f"page script failed: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def screenshot(self, session: str, path: Path) -> None:
        """A PNG of the whole page (beyond the viewport)."""
        size = self.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = self.call(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True, "clip": clip},
            session=session,
        )
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        with contextlib.suppress(CDPError, OSError):
            self.call("Browser.close", timeout=5.0)
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
        self._selector.close()
        os.close(self._to_browser)
        os.close(self._from_browser)
