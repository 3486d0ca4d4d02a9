"""One image request from arrival to settlement, the same for every endpoint and profile.

Order, as a provider would do it: key → body → (fault decision) → rate limit → parameters →
source images → price hold → generation time (watching for the client to leave) → answer.
Whatever happens, the request is settled exactly once - charged per policy and recorded -
before its response is sent, so a client that reads the balance right after its answer sees
the charge. A request cut off by cancellation is settled on the way out.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from datetime import UTC, datetime

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from runner.models import Outcome
from runner.sandbox import errors
from runner.sandbox.answers import answer
from runner.sandbox.charging import hold_price, quote, settle
from runner.sandbox.config import FaultKind, Profile
from runner.sandbox.disconnect import ClientGone, unless_client_leaves
from runner.sandbox.exchange import Exchange
from runner.sandbox.generation import instant, load_sources, produce
from runner.sandbox.groups import OPENAI_GROUP, group_for_key, is_rejected_key
from runner.sandbox.headers import base_headers, retry_headers
from runner.sandbox.ids import oneapi_request_id, openai_request_id
from runner.sandbox.messages import parse_chat, parse_responses
from runner.sandbox.parsing import (
    MAX_SOURCE_IMAGES,
    Endpoint,
    ImageCall,
    parse_generation,
    parse_json_edit,
    parse_multipart_edit,
    read_json,
)
from runner.sandbox.records import CLIENT_CLOSED
from runner.sandbox.render import TINY_EDGE
from runner.sandbox.state import Sandbox
from runner.sandbox.validation import Resolved, resolve_gateway, resolve_official

MAX_CLIENT_REQUEST_ID = 512


async def handle(
    sandbox: Sandbox, request: Request, profile: Profile, endpoint: Endpoint
) -> Response:
    """Answer one image request (the Starlette endpoints all delegate here)."""
    return await respond(sandbox, start_exchange(sandbox, request, profile, endpoint))


async def respond(sandbox: Sandbox, ex: Exchange) -> Response:
    """Run ``ex`` through the pipeline and settle it (once), whatever happens."""
    response: Response
    try:
        response = await _run(sandbox, ex)
    except errors.ApiError as err:
        ex.outcome, ex.status = err.outcome, err.status
        response = error_response(sandbox, ex, err)
    except ClientGone:
        # Nobody is listening; settle() files it as a timeout (status 499).
        response = Response(status_code=CLIENT_CLOSED)
    except Exception:
        # A sandbox bug: record it as the 500 the server will send, never as a timeout.
        ex.outcome, ex.status = Outcome.SERVER_ERROR, 500
        raise
    finally:
        if not ex.settled:
            settle(sandbox, ex)
    return response


def start_exchange(
    sandbox: Sandbox,
    request: Request,
    profile: Profile,
    endpoint: Endpoint,
    *,
    batch_id: str | None = None,
) -> Exchange:
    """A numbered exchange for ``request`` (``batch_id``: a line of that batch)."""
    seq = sandbox.next_seq()
    ids = sandbox.id_rng(seq)
    wall_ns = sandbox.wall_ns()
    if profile is Profile.OPENAI:
        request_id = openai_request_id(ids)
    else:
        request_id = oneapi_request_id(ids, wall_ns, sandbox.build)
    return Exchange(
        request=request,
        run_id=sandbox.run_id,
        profile=profile,
        endpoint=endpoint,
        seq=seq,
        arrived=datetime.fromtimestamp(wall_ns / 1e9, UTC),
        started=sandbox.clock(),
        request_id=request_id,
        upstream_id=openai_request_id(ids),
        ids=ids,
        client_request_id=request.headers.get("x-client-request-id"),
        batch_id=batch_id,
    )


def error_response(sandbox: Sandbox, ex: Exchange, err: errors.ApiError) -> Response:
    """The error as ``ex``'s profile writes it, with its headers."""
    headers = base_headers(ex, sandbox.clock() - ex.started) | err.headers
    if err.html is not None:
        return HTMLResponse(err.html, status_code=err.status, headers=headers)
    body = err.body(ex.profile, ex.request_id)
    return JSONResponse(body, status_code=err.status, headers=headers)


async def _run(sandbox: Sandbox, ex: Exchange) -> Response:
    _check_client_request_id(ex)
    _authenticate(sandbox, ex)
    ex.call = call = await _parse(ex)
    ex.fault = sandbox.faults.decide(prompt=call.prompt, seq=ex.seq, profile=ex.profile)
    if ex.fault is FaultKind.AUTH:
        raise errors.bad_key(ex.profile, ex.key)
    _admit(sandbox, ex, call)
    if ex.gateway_group is None:
        ex.resolved = resolve_official(call, sandbox.catalog)
    else:
        ex.resolved = resolve_gateway(call, ex.gateway_group, sandbox.catalog)
    if sandbox.config.tiny:
        ex.resolved = _tiny(ex.resolved)
    sources, mask, sizes = await load_sources(sandbox, ex, call)
    ex.quote = price = quote(ex, sizes)
    if ex.fault is FaultKind.QUOTA or not hold_price(sandbox, ex, price):
        assert ex.account is not None
        status = sandbox.config.quota_status
        raise errors.insufficient_quota(ex.profile, status, ex.account.available, price.quota)
    if instant(sandbox.config, ex, sources):
        return answer(sandbox, ex, await produce(sandbox, ex, sources, mask))
    work = functools.partial(produce, sandbox, ex, sources, mask)
    with sandbox.interruptible() as scope:
        images = await unless_client_leaves(ex.request.receive, work)
    if scope.cancelled_caught:
        # The server is stopping: answer now rather than hold up its shutdown.
        raise errors.shutting_down()
    return answer(sandbox, ex, images)


def _check_client_request_id(ex: Exchange) -> None:
    # OpenAI refuses a caller id that is not ASCII or longer than 512 characters (S4).
    value = ex.client_request_id
    if ex.profile is not Profile.OPENAI or value is None:
        return
    if len(value) > MAX_CLIENT_REQUEST_ID or not value.isascii():
        raise errors.invalid_request(
            "X-Client-Request-Id must be ASCII and at most 512 characters long."
        )


def _authenticate(sandbox: Sandbox, ex: Exchange) -> None:
    header = ex.request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    # new-api accepts the key with or without "Bearer"; OpenAI wants Bearer.
    key = value.strip() if scheme.lower() == "bearer" else header.strip()
    if not key or is_rejected_key(key):
        raise errors.bad_key(ex.profile, key)
    ex.key = key
    if ex.profile is Profile.OPENAI:
        ex.group = OPENAI_GROUP
    else:
        ex.gateway_group = group_for_key(key)
        ex.group = ex.gateway_group.name
    ex.account = sandbox.ledger.account(ex.profile, key, ex.group)


async def _parse(ex: Exchange) -> ImageCall:
    request = ex.request
    if ex.endpoint is Endpoint.GENERATIONS:
        return parse_generation(await read_json(request))
    if ex.endpoint is Endpoint.RESPONSES:
        return parse_responses(await read_json(request))
    if ex.endpoint is Endpoint.CHAT:
        return parse_chat(await read_json(request))
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        try:
            async with request.form(max_files=MAX_SOURCE_IMAGES + 1, max_part_size=1 << 20) as form:
                return await parse_multipart_edit(form)
        except HTTPException as exc:
            raise errors.invalid_request(
                f"Could not parse the multipart body: {exc.detail}"
            ) from exc
    if ex.profile is Profile.OPENAI:
        return parse_json_edit(await read_json(request))
    await request.body()
    raise errors.invalid_request("Image edits take a multipart/form-data body on this gateway.")


def _admit(sandbox: Sandbox, ex: Exchange, call: ImageCall) -> None:
    if ex.batch_id is not None:
        return  # batch lines draw on their own pool, not the synchronous limits
    n = call.params.get("n", 1)
    images = int(n) if isinstance(n, int | str) and str(n).isdigit() else 1
    ex.admission = admission = sandbox.limiter.admit((ex.profile, ex.key), images, ex.started)
    ex.limit_headers = sandbox.config.limit_headers
    if admission is not None and not admission.allowed:
        raise errors.rate_limited(
            metric=admission.metric,
            limit=admission.limit,
            model=call.model or "gpt-image-2",
            retry_after_s=admission.retry_after_s,
            headers=retry_headers(ex.profile, admission.retry_after_s),
        )


def _tiny(resolved: Resolved) -> Resolved:
    # Tiny mode draws (and reports) 64x64 whatever was asked, after the size was validated.
    return replace(resolved, width=TINY_EDGE, height=TINY_EDGE)
