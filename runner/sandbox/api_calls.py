"""The bookkeeping every Files and Batch API call shares: the key, the log, the error body.

These calls are free and draw on no rate limit; they are recorded in the request log under
the kind ``batch`` with the official profile's request id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from runner.sandbox import errors
from runner.sandbox.config import Profile
from runner.sandbox.groups import OPENAI_GROUP, is_rejected_key
from runner.sandbox.plain import PlainRequest
from runner.sandbox.state import Sandbox

#: What a handler does once the caller's key was accepted (it gets the key and the call).
Work = Callable[["ApiCall"], Awaitable[Response]]


class ApiCall(PlainRequest):
    """One Files or Batch API request, numbered on arrival."""

    key: str = ""


def sandbox_of(request: Request) -> Sandbox:
    """The sandbox behind the app that got ``request``."""
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


def _key(request: Request) -> str:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    key = value.strip() if scheme.lower() == "bearer" else ""
    if not key or is_rejected_key(key):
        raise errors.bad_key(Profile.OPENAI, key)
    return key


async def api_call(request: Request, work: Work) -> Response:
    """Run ``work`` for an authenticated caller; an :class:`ApiError` becomes its answer."""
    call = ApiCall(sandbox_of(request), request, Profile.OPENAI, "batch")
    try:
        call.key = _key(request)
        response = await work(call)
    except errors.ApiError as err:
        body = err.body(Profile.OPENAI, call.request_id)
        response = JSONResponse(body, status_code=err.status, headers=err.headers)
    return call.finish(response, group=OPENAI_GROUP)
