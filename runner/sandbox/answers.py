"""The answer to a request that reached generation, with any fault that strikes after it.

Body faults (corrupt base64, no image) still answer 200 and are ``bad_response``; transit
faults (a reset, a cut-off body) break the connection. All of them happen after the work
was done, which is why a provider may bill them.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from runner.models import Outcome
from runner.sandbox.bodies import b64_value, chat_body, corrupt_b64, images_body, responses_body
from runner.sandbox.config import FaultKind, Profile
from runner.sandbox.delivery import ResetResponse, TruncatedResponse
from runner.sandbox.exchange import Exchange
from runner.sandbox.headers import success_headers
from runner.sandbox.ids import object_id
from runner.sandbox.parsing import Endpoint
from runner.sandbox.render import MIME_TYPES
from runner.sandbox.state import Sandbox

_BODY_FAULTS = frozenset({FaultKind.CORRUPT_B64, FaultKind.EMPTY_DATA, FaultKind.TRUNCATE})


def _serve(sandbox: Sandbox, ex: Exchange, data: bytes, fmt: str) -> str:
    """Store ``data`` as an expiring file; its URL as the client can reach it."""
    name = f"{object_id(ex.ids, 'img_', 24)}.{'jpg' if fmt == 'jpeg' else fmt}"
    sandbox.files.put(name, data, MIME_TYPES[fmt], sandbox.config.file_ttl)
    return f"{ex.origin}/{ex.profile.value}/files/{name}"


def _b64(ex: Exchange, data: bytes, fmt: str) -> str:
    value = b64_value(data, ex.profile, fmt)
    return corrupt_b64(value) if ex.fault is FaultKind.CORRUPT_B64 else value


def _url(sandbox: Sandbox, ex: Exchange, data: bytes, fmt: str) -> str:
    # A corrupt "b64" on a URL route is a link to bytes that do not decode.
    if ex.fault is FaultKind.CORRUPT_B64:
        data = data[: len(data) // 3]
    return _serve(sandbox, ex, data, fmt)


def _body(sandbox: Sandbox, ex: Exchange, images: list[bytes], created: int) -> dict[str, Any]:
    resolved, call, price = ex.resolved, ex.call, ex.quote
    assert resolved is not None
    assert call is not None
    assert price is not None
    fmt = resolved.fmt
    if ex.endpoint is Endpoint.CHAT:
        return chat_body(
            chat_id=object_id(ex.ids, "chatcmpl-", 29),
            model=resolved.model,
            urls=[_url(sandbox, ex, data, fmt) for data in images],
            prompt_tokens=price.prompt_tokens,
            created=created,
        )
    if ex.endpoint is Endpoint.RESPONSES:
        assert price.usage is not None
        assert price.mainline is not None
        return responses_body(
            ids={
                "response": object_id(ex.ids, "resp_", 48),
                "call": object_id(ex.ids, "ig_", 48),
                "message": object_id(ex.ids, "msg_", 48),
            },
            mainline_model=call.mainline_model or "",
            resolved=resolved,
            results=[_b64(ex, data, fmt) for data in images],
            usage=price.usage,
            mainline=price.mainline,
            prompt=call.prompt,
            tool={"type": "image_generation", **call.params},
            created=created,
        )
    if resolved.response_format == "url":
        items = [{"url": _url(sandbox, ex, data, fmt)} for data in images]
    else:
        items = [{"b64_json": _b64(ex, data, fmt)} for data in images]
    return images_body(resolved=resolved, items=items, usage=price.usage, created=created)


def answer(sandbox: Sandbox, ex: Exchange, images: list[bytes]) -> Response:
    """The response for generated ``images``; sets the exchange's outcome and status."""
    if ex.fault is FaultKind.RESET:
        ex.outcome, ex.status = Outcome.NETWORK, None
        return ResetResponse(sandbox.connections)
    if ex.fault is FaultKind.EMPTY_DATA:
        images = []
    created = sandbox.wall_ns() // 1_000_000_000
    content = json.dumps(_body(sandbox, ex, images, created)).encode()
    ex.outcome = Outcome.BAD_RESPONSE if ex.fault in _BODY_FAULTS else Outcome.OK
    ex.status = 200
    relayed = ex.gateway_group is not None and ex.gateway_group.billing == "token"
    elapsed = sandbox.clock() - ex.started
    headers = success_headers(ex, elapsed, relayed=relayed and ex.profile is Profile.LAOZHANG)
    if ex.fault is FaultKind.TRUNCATE:
        return TruncatedResponse(
            content,
            keep=len(content) // 2,
            status_code=200,
            headers=headers,
            media_type="application/json",
            registry=sandbox.connections,
        )
    return Response(content, status_code=200, headers=headers, media_type="application/json")
