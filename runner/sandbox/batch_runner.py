"""Running one batch: validating, its lines through the image pipeline, finalizing.

Each line is a request to the synchronous pipeline (:func:`runner.sandbox.pipeline.respond`),
marked as a batch line: the same validation, fault markers, moderation word, usage and
settlement, except that it draws on no synchronous rate limit and is charged at the batch
price. Lines run ``batch_concurrency`` at a time in a seeded shuffled order, so the output
file is not in input order (OpenAI promises none either). A response with status 200 goes to
the output file, any other to the error file; results are written line by line to disk.

The completion window (``batch_window`` seconds) runs from creation. When it runs out, or a
cancel arrives, no further line is started; lines already running finish and are kept (and
charged); the lines never started go to the error file as ``batch_expired`` or
``batch_cancelled`` and count neither as completed nor as failed.

Transport faults (``reset``, ``truncate``) have no connection to break inside a batch: such a
line answers 500 ``server_error`` in the error file.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import BinaryIO

import anyio
import anyio.lowlevel
from starlette.requests import Request
from starlette.types import Message

from runner.sandbox import errors
from runner.sandbox.batch_lines import (
    InputPlan,
    batch_error,
    check_input,
    read_span,
    response_line,
    unrun_line,
)
from runner.sandbox.batch_state import BatchRecord, BatchStatus
from runner.sandbox.config import FaultKind, Profile
from runner.sandbox.file_store import BATCH_FILE_TTL_S, FilePurpose, StoredFile
from runner.sandbox.ids import alnum_id, object_id, openai_request_id
from runner.sandbox.parsing import Endpoint
from runner.sandbox.pipeline import respond, start_exchange
from runner.sandbox.state import Sandbox

#: Line urls the sandbox runs, and the pipeline endpoint each is.
LINE_ENDPOINTS: dict[str, Endpoint] = {
    "/v1/images/generations": Endpoint.GENERATIONS,
    "/v1/images/edits": Endpoint.EDITS,
    "/v1/responses": Endpoint.RESPONSES,
}
_log = logging.getLogger(__name__)
_TRANSPORT_FAULTS = frozenset({FaultKind.RESET, FaultKind.TRUNCATE})
_UNRUN = {
    BatchStatus.EXPIRED: (
        "batch_expired",
        "This request could not be executed before the completion window expired.",
    ),
    BatchStatus.CANCELLED: (
        "batch_cancelled",
        "This request was not executed because the batch was cancelled.",
    ),
}


def _now(sandbox: Sandbox) -> int:
    return sandbox.wall_ns() // 1_000_000_000


def line_request(origin: str, path: str, key: str, body: bytes) -> Request:
    """A request as if the line had arrived over HTTP (its body, then nothing, forever)."""
    scheme, _, host = origin.partition("://")
    hostname, _, port = host.rpartition(":")
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "server": (hostname, int(port)) if port.isdigit() else (host, None),
        "client": None,
        "headers": [
            (b"host", host.encode()),
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-type", b"application/json"),
        ],
    }
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    return Request(scope, receive)


class _Results:
    """The output and error files being written, one line at a time."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.paths = (sandbox.uploads.scratch_path(), sandbox.uploads.scratch_path())
        self._files: tuple[BinaryIO, BinaryIO] = (
            self.paths[0].open("wb"),
            self.paths[1].open("wb"),
        )
        self.sizes = [0, 0]
        self.lines = [0, 0]

    def write(self, line: tuple[bytes, ...], *, ok: bool) -> None:
        which = 0 if ok else 1
        for piece in line:
            self._files[which].write(piece)
            self.sizes[which] += len(piece)
        self.lines[which] += 1

    def close(self) -> None:
        for file in self._files:
            file.close()

    def discard(self) -> None:
        self.close()
        for path in self.paths:
            path.unlink(missing_ok=True)


async def _run_line(
    sandbox: Sandbox, batch: BatchRecord, raw: dict[str, object]
) -> tuple[tuple[bytes, ...], bool]:
    custom_id, url = str(raw["custom_id"]), str(raw["url"])
    body = json.dumps(raw["body"]).encode()
    endpoint = LINE_ENDPOINTS.get(url)
    if endpoint is None:
        ids = random.SystemRandom()
        error = errors.not_found("POST", url)
        content = json.dumps(error.body(Profile.OPENAI, "")).encode()
        line_id = object_id(ids, "batch_req_", 32)
        return response_line(line_id, custom_id, 404, openai_request_id(ids), content), False
    request = line_request(batch.origin, f"/{Profile.OPENAI.value}{url}", batch.key, body)
    ex = start_exchange(sandbox, request, Profile.OPENAI, endpoint, batch_id=batch.id)
    response = await respond(sandbox, ex)
    status, content = ex.status or 500, bytes(response.body)
    if ex.fault in _TRANSPORT_FAULTS:
        status = 500
        content = json.dumps(errors.server_error().body(Profile.OPENAI, ex.request_id)).encode()
    ok = status == 200
    if ok and ex.quote is not None and ex.quote.usage is not None:
        batch.usage.add(ex.quote.usage)
    line_id = object_id(ex.ids, "batch_req_", 32)
    return response_line(line_id, custom_id, status, ex.request_id, content), ok


async def _run_lines(
    sandbox: Sandbox, batch: BatchRecord, path: Path, plan: InputPlan, results: _Results
) -> list[int]:
    """Run lines until done, cancelled or out of time; the indexes never started."""
    order = list(range(len(plan.spans)))
    random.Random(f"{sandbox.config.seed}:{batch.id}").shuffle(order)
    pending = iter(order)
    left: list[int] = []

    def stopped() -> bool:
        late = sandbox.clock() >= batch.deadline
        return late or batch.cancel.is_set() or batch.run_id != sandbox.run_id

    async def worker() -> None:
        for index in pending:
            if stopped():
                left.append(index)
                continue
            line, ok = await _run_line(sandbox, batch, read_span(path, plan.spans[index]))
            results.write(line, ok=ok)
            del line  # megabytes of base64 must not wait here for the next line's image
            if ok:
                batch.completed += 1
            else:
                batch.failed += 1
            # An instant line must not hold the loop from pollers.
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as group:
        for _ in range(min(sandbox.config.batch_concurrency, len(order))):
            group.start_soon(worker)
    return left


def _attach(sandbox: Sandbox, batch: BatchRecord, results: _Results) -> None:
    results.close()
    now = _now(sandbox)
    ttl = batch.output_ttl_s or BATCH_FILE_TTL_S
    ids = random.SystemRandom()
    for which, suffix in enumerate(("output", "error")):
        path = results.paths[which]
        if results.lines[which] == 0:
            path.unlink(missing_ok=True)
            continue
        stored = StoredFile(
            id=alnum_id(ids, "file-"),
            filename=f"{batch.id}_{suffix}.jsonl",
            purpose=FilePurpose.BATCH_OUTPUT,
            size=results.sizes[which],
            created_at=now,
            expires_at=now + ttl,
            path=path,
            seq=sandbox.uploads.next_seq(),
        )
        sandbox.uploads.add(stored)
        if which == 0:
            batch.output_file_id = stored.id
        else:
            batch.error_file_id = stored.id


async def _pause(batch: BatchRecord, seconds: float) -> None:
    # A step's delay, cut short by a cancel.
    with anyio.move_on_after(seconds):
        await batch.cancel.wait()


def _end(sandbox: Sandbox, batch: BatchRecord, status: BatchStatus) -> None:
    batch.status = status
    stamp = _now(sandbox)
    match status:
        case BatchStatus.COMPLETED:
            batch.completed_at = stamp
        case BatchStatus.EXPIRED:
            batch.expired_at = stamp
        case BatchStatus.CANCELLED:
            batch.cancelled_at = stamp
        case _:
            batch.failed_at = stamp


async def _validate(sandbox: Sandbox, batch: BatchRecord) -> tuple[Path, InputPlan] | None:
    await _pause(batch, sandbox.config.batch_validating)
    if batch.cancel.is_set():
        _end(sandbox, batch, BatchStatus.CANCELLED)
        return None
    source = sandbox.uploads.get(batch.input_file_id)
    if source is None:
        batch.errors = [batch_error("file_not_found", "The input file was deleted.")]
        _end(sandbox, batch, BatchStatus.FAILED)
        return None
    checked = await anyio.to_thread.run_sync(check_input, source.path, batch.endpoint)
    if isinstance(checked, list):
        batch.errors = checked
        _end(sandbox, batch, BatchStatus.FAILED)
        return None
    batch.total, batch.model = len(checked.spans), checked.model
    return source.path, checked


async def run_batch(sandbox: Sandbox, batch: BatchRecord) -> None:
    """Take ``batch`` from ``validating`` to a final state (the task behind each batch).

    A sandbox bug fails the batch (``errors`` says so) rather than leaving it running forever.
    """
    try:
        await _run_batch(sandbox, batch)
    except Exception:
        _log.exception("sandbox: batch %s crashed", batch.id)
        batch.errors = [batch_error("server_error", "The sandbox failed to run this batch.")]
        _end(sandbox, batch, BatchStatus.FAILED)


async def _run_batch(sandbox: Sandbox, batch: BatchRecord) -> None:
    validated = await _validate(sandbox, batch)
    if validated is None:
        return
    path, plan = validated
    if not batch.cancel.is_set():
        batch.status, batch.in_progress_at = BatchStatus.IN_PROGRESS, _now(sandbox)
    results = _Results(sandbox)
    try:
        left = await _run_lines(sandbox, batch, path, plan, results)
        if batch.run_id != sandbox.run_id:
            results.discard()
            return
        ending = BatchStatus.EXPIRED if left else BatchStatus.COMPLETED
        if batch.cancel.is_set():
            ending = BatchStatus.CANCELLED
        if ending in _UNRUN:
            code, message = _UNRUN[ending]
            ids = random.SystemRandom()
            for index in left:
                custom_id = str(read_span(path, plan.spans[index])["custom_id"])
                line = unrun_line(object_id(ids, "batch_req_", 32), custom_id, code, message)
                results.write(line, ok=False)
        else:
            batch.status, batch.finalizing_at = BatchStatus.FINALIZING, _now(sandbox)
            await _pause(batch, sandbox.config.batch_finalizing)
            if batch.cancel.is_set():
                ending = BatchStatus.CANCELLED
    finally:
        results.close()
    _attach(sandbox, batch, results)
    _end(sandbox, batch, ending)
