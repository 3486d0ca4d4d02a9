"""``/openai/v1/batches``: create, retrieve, list and cancel, as OpenAI answers them.

A batch is created ``validating`` and runs in a task of the server's event loop
(:func:`runner.sandbox.batch_runner.run_batch`); the 24 h window is ``batch_window`` seconds
of the sandbox. Every endpoint OpenAI accepts is accepted; lines for endpoints the sandbox
does not emulate (chat, embeddings, …) each answer 404 in the error file. Files and batches
are shared by every key, as one OpenAI project's are.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from runner.models import Outcome
from runner.sandbox import errors
from runner.sandbox.api_calls import ApiCall, api_call
from runner.sandbox.batch_runner import run_batch
from runner.sandbox.batch_state import FINAL_STATES, BatchRecord, BatchStatus
from runner.sandbox.file_store import EXPIRES_AFTER_RANGE, FilePurpose, no_such_file
from runner.sandbox.ids import object_id
from runner.sandbox.parsing import read_json

#: Endpoints a batch may be created for (OpenAI's list).
BATCH_ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)
#: The only completion window there is, and the seconds it stands for on OpenAI.
COMPLETION_WINDOW = "24h"
WINDOW_S = 24 * 3600
#: Metadata limits: pairs, key length, value length.
METADATA_LIMITS = (16, 64, 512)
#: Batches a list returns: by default, at most.
LIST_LIMITS = (20, 100)


def _metadata(value: Any) -> Mapping[str, str] | None:
    pairs, key_len, value_len = METADATA_LIMITS
    if value is None:
        return None
    ok = isinstance(value, dict) and len(value) <= pairs
    ok = ok and all(
        isinstance(k, str) and isinstance(v, str) and len(k) <= key_len and len(v) <= value_len
        for k, v in value.items()
    )
    if not ok:
        raise errors.invalid_value(
            "metadata",
            f"Invalid 'metadata': at most {pairs} string pairs, keys up to {key_len} "
            f"characters, values up to {value_len}.",
        )
    return dict(value)


def _output_ttl(value: Any) -> int | None:
    if value is None:
        return None
    low, high = EXPIRES_AFTER_RANGE
    shaped = isinstance(value, dict) and value.get("anchor") == "created_at"
    seconds = value.get("seconds") if shaped else None
    if not isinstance(seconds, int):
        raise errors.invalid_value(
            "output_expires_after", "Invalid 'output_expires_after': {anchor, seconds}."
        )
    if not low <= seconds <= high:
        raise errors.invalid_value(
            "output_expires_after.seconds", f"The seconds must be between {low} and {high}."
        )
    return seconds


def _input_file(call: ApiCall, value: Any) -> str:
    if value is None:
        raise errors.missing_parameter("input_file_id")
    if not isinstance(value, str):
        raise errors.invalid_value("input_file_id", "Invalid 'input_file_id': expected a string.")
    stored = call.sandbox.uploads.get(value)
    if stored is None:
        raise no_such_file(value, "input_file_id")
    if stored.purpose is not FilePurpose.BATCH:
        raise errors.invalid_request(
            f"The input file {value} must be uploaded with purpose 'batch', "
            f"not '{stored.purpose.value}'.",
            param="input_file_id",
        )
    return value


def _check_choices(body: Mapping[str, Any]) -> None:
    for name in ("endpoint", "completion_window"):
        if body.get(name) is None:
            raise errors.missing_parameter(name)
    if body["endpoint"] not in BATCH_ENDPOINTS:
        raise errors.invalid_value(
            "endpoint", f"Invalid 'endpoint': expected one of {', '.join(BATCH_ENDPOINTS)}."
        )
    if body["completion_window"] != COMPLETION_WINDOW:
        raise errors.invalid_value(
            "completion_window", "Invalid 'completion_window': only '24h' is supported."
        )


def _new_batch(call: ApiCall, body: Mapping[str, Any]) -> BatchRecord:
    _check_choices(body)
    sandbox = call.sandbox
    input_file_id = _input_file(call, body.get("input_file_id"))
    now = sandbox.wall_ns() // 1_000_000_000
    window = sandbox.config.batch_window
    return BatchRecord(
        id=object_id(sandbox.id_rng(call.seq), "batch_", 32),
        seq=sandbox.batches.next_seq(),
        run_id=sandbox.run_id,
        key=call.key,
        origin=str(call.request.base_url).rstrip("/"),
        endpoint=body["endpoint"],
        input_file_id=input_file_id,
        completion_window=COMPLETION_WINDOW,
        metadata=_metadata(body.get("metadata")),
        created_at=now,
        # The window as the sandbox compresses it, rounded up to a whole second.
        expires_at=now + math.ceil(window),
        output_ttl_s=_output_ttl(body.get("output_expires_after")),
        deadline=sandbox.clock() + window,
    )


async def create_batch(request: Request) -> Response:
    """``POST /v1/batches``."""

    async def work(call: ApiCall) -> Response:
        batch = _new_batch(call, await read_json(request))
        task = asyncio.get_running_loop().create_task(run_batch(call.sandbox, batch))
        call.sandbox.batches.add(batch, task)
        delay = call.sandbox.config.batch_create_delay
        if delay > 0:
            await anyio.sleep(delay)  # the batch runs; the client has not heard yet
        return JSONResponse(batch.to_json())

    return await api_call(request, work)


def _batch(call: ApiCall, request: Request) -> BatchRecord:
    wanted = request.path_params["batch_id"]
    batch = call.sandbox.batches.get(wanted)
    if batch is None:
        raise errors.ApiError(
            404,
            f"No batch found with id '{wanted}'.",
            type="invalid_request_error",
            param="batch_id",
            outcome=Outcome.INVALID_REQUEST,
        )
    return batch


async def retrieve_batch(request: Request) -> Response:
    """``GET /v1/batches/{batch_id}``."""

    async def work(call: ApiCall) -> Response:
        return JSONResponse(_batch(call, request).to_json())

    return await api_call(request, work)


async def list_batches(request: Request) -> Response:
    """``GET /v1/batches`` (``after``, ``limit``), newest first."""

    async def work(call: ApiCall) -> Response:
        default, most = LIST_LIMITS
        text = request.query_params.get("limit", str(default))
        if not text.isdigit() or not 1 <= int(text) <= most:
            raise errors.invalid_value("limit", f"Invalid 'limit': expected 1 to {most}.")
        batches, more = call.sandbox.batches.page(
            after=request.query_params.get("after"), limit=int(text)
        )
        return JSONResponse(
            {
                "object": "list",
                "data": [b.to_json() for b in batches],
                "first_id": batches[0].id if batches else None,
                "last_id": batches[-1].id if batches else None,
                "has_more": more,
            }
        )

    return await api_call(request, work)


async def cancel_batch(request: Request) -> Response:
    """``POST /v1/batches/{batch_id}/cancel``: ``cancelling`` until running lines finish."""

    async def work(call: ApiCall) -> Response:
        batch = _batch(call, request)
        if batch.status in FINAL_STATES:
            raise errors.ApiError(
                409,
                f"Cannot cancel a batch with status '{batch.status.value}'.",
                type="invalid_request_error",
                outcome=Outcome.INVALID_REQUEST,
            )
        if batch.status is not BatchStatus.CANCELLING:
            batch.status = BatchStatus.CANCELLING
            batch.cancelling_at = call.sandbox.wall_ns() // 1_000_000_000
            batch.cancel.set()
        return JSONResponse(batch.to_json())

    return await api_call(request, work)
