"""The admin API, for tests and benchmarks that run the sandbox in another process.

- ``GET /_sandbox/requests[?kind=image|file|account|batch|all][&after=SEQ]``: the request log.
- ``GET /_sandbox/state``: balances, totals charged, outcome counts.
- ``GET /_sandbox/config`` / ``POST /_sandbox/config``: read or patch the knobs.
- ``POST /_sandbox/reset``: forget everything (optionally with a config patch as body).

Admin requests are not recorded and need no key: the sandbox only listens on loopback.
"""

from __future__ import annotations

import json
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from runner.sandbox.codec import config_from_json, config_to_json
from runner.sandbox.records import RecordKind
from runner.sandbox.state import Sandbox

_KINDS = ("image", "file", "account", "batch")


def _sandbox(request: Request) -> Sandbox:
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


def _bad(message: str) -> Response:
    return JSONResponse({"error": {"message": message, "type": "sandbox_admin_error"}}, 400)


async def _patch(request: Request) -> dict[str, Any] | None:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


async def requests_log(request: Request) -> Response:
    """``GET /_sandbox/requests``."""
    kind = request.query_params.get("kind", "image")
    if kind != "all" and kind not in _KINDS:
        return _bad(f"kind must be one of {', '.join(_KINDS)} or all")
    after = request.query_params.get("after", "0")
    if not after.isdigit():
        return _bad("after must be a sequence number")
    chosen = None if kind == "all" else cast(RecordKind, kind)
    records = [r for r in _sandbox(request).requests(chosen) if r.seq > int(after)]
    return JSONResponse({"data": [r.to_json() for r in records]})


async def state(request: Request) -> Response:
    """``GET /_sandbox/state``."""
    return JSONResponse(_sandbox(request).snapshot())


async def config(request: Request) -> Response:
    """``GET`` returns the knobs; ``POST`` patches them with the JSON body."""
    sandbox = _sandbox(request)
    if request.method == "POST":
        patch = await _patch(request)
        if patch is None:
            return _bad("expected a JSON object")
        try:
            sandbox.apply(config_from_json(patch, sandbox.config))
        except ValueError as exc:
            return _bad(str(exc))
    return JSONResponse(config_to_json(sandbox.config))


async def reset(request: Request) -> Response:
    """``POST /_sandbox/reset``: clear the log, accounts and files; apply an optional patch."""
    sandbox = _sandbox(request)
    patch = await _patch(request)
    if patch is None:
        return _bad("expected a JSON object or an empty body")
    try:
        new_config = config_from_json(patch, sandbox.config)
    except ValueError as exc:
        return _bad(str(exc))
    sandbox.reset(new_config)
    return JSONResponse(sandbox.snapshot())
