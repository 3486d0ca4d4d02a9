"""``/openai/v1/files``: upload, list, retrieve, download and delete, as OpenAI answers them.

An upload is copied to disk chunk by chunk (Starlette spools the multipart part to a
temporary file first), and its content is streamed back from disk: nothing here holds a
whole file in memory.
"""

from __future__ import annotations

import anyio
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from runner.sandbox import errors
from runner.sandbox.api_calls import ApiCall, api_call
from runner.sandbox.file_store import (
    BATCH_FILE_TTL_S,
    EXPIRES_AFTER_RANGE,
    MAX_BATCH_FILE_BYTES,
    MAX_FILE_BYTES,
    UPLOAD_PURPOSES,
    FilePurpose,
    StoredFile,
    copy_upload,
    no_such_file,
)
from runner.sandbox.ids import alnum_id

#: Files a list returns when it is not told how many (OpenAI's default and maximum).
MAX_LIST_FILES = 10_000


def file_id(call: ApiCall) -> str:
    """A new ``file-…`` id from the call's id generator."""
    return alnum_id(call.sandbox.id_rng(call.seq), "file-")


def _purpose(form: FormData) -> FilePurpose:
    value = form.get("purpose")
    if value is None:
        raise errors.missing_parameter("purpose")
    allowed = sorted(p.value for p in UPLOAD_PURPOSES)
    if not isinstance(value, str) or value not in allowed:
        raise errors.invalid_value(
            "purpose", f"Invalid value for 'purpose': expected one of {', '.join(allowed)}."
        )
    return FilePurpose(value)


def _expires_after(form: FormData, purpose: FilePurpose, now: int) -> int | None:
    anchor, seconds = form.get("expires_after[anchor]"), form.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return now + BATCH_FILE_TTL_S if purpose is FilePurpose.BATCH else None
    low, high = EXPIRES_AFTER_RANGE
    if anchor != "created_at":
        raise errors.invalid_value("expires_after.anchor", "The anchor must be 'created_at'.")
    if not isinstance(seconds, str) or not seconds.isdigit() or not low <= int(seconds) <= high:
        raise errors.invalid_value(
            "expires_after.seconds", f"The seconds must be between {low} and {high}."
        )
    return now + int(seconds)


async def _store(call: ApiCall, form: FormData) -> StoredFile:
    upload = form.get("file")
    if upload is None:
        raise errors.missing_parameter("file")
    if not isinstance(upload, UploadFile):
        raise errors.invalid_value("file", "Invalid 'file': expected a file upload.")
    purpose = _purpose(form)
    filename = upload.filename or "upload"
    if purpose is FilePurpose.BATCH and not filename.endswith(".jsonl"):
        raise errors.invalid_request(
            "Invalid file format for Batch API. Must be .jsonl", param="file"
        )
    now = call.sandbox.wall_ns() // 1_000_000_000
    expires_at = _expires_after(form, purpose, now)
    uploads = call.sandbox.uploads
    path = uploads.scratch_path()
    limit = MAX_BATCH_FILE_BYTES if purpose is FilePurpose.BATCH else MAX_FILE_BYTES
    size = await copy_upload(upload, path, limit)
    stored = StoredFile(
        id=file_id(call),
        filename=filename,
        purpose=purpose,
        size=size,
        created_at=now,
        expires_at=expires_at,
        path=path,
        seq=uploads.next_seq(),
    )
    uploads.add(stored)
    return stored


async def create_file(request: Request) -> Response:
    """``POST /v1/files`` (multipart ``file``, ``purpose``, optional ``expires_after``)."""

    async def work(call: ApiCall) -> Response:
        try:
            async with request.form(max_files=1, max_fields=8) as form:
                stored = await _store(call, form)
        except HTTPException as exc:
            message = f"Could not parse the multipart body: {exc.detail}"
            raise errors.invalid_request(message) from exc
        delay = call.sandbox.config.file_create_delay
        if delay > 0:
            await anyio.sleep(delay)  # the file exists; the client has not heard yet
        return JSONResponse(stored.to_json())

    return await api_call(request, work)


def _limit(request: Request, default: int, most: int) -> int:
    text = request.query_params.get("limit")
    if text is None:
        return default
    if not text.isdigit() or not 1 <= int(text) <= most:
        raise errors.invalid_value("limit", f"Invalid 'limit': expected 1 to {most}.")
    return int(text)


async def list_files(request: Request) -> Response:
    """``GET /v1/files`` (``purpose``, ``limit``, ``after``, ``order``)."""

    async def work(call: ApiCall) -> Response:
        params = request.query_params
        order = params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise errors.invalid_value("order", "Invalid 'order': expected asc or desc.")
        files, more = call.sandbox.uploads.page(
            purpose=params.get("purpose"),
            after=params.get("after"),
            limit=_limit(request, MAX_LIST_FILES, MAX_LIST_FILES),
            newest_first=order == "desc",
        )
        return JSONResponse(
            {
                "object": "list",
                "data": [f.to_json() for f in files],
                "first_id": files[0].id if files else None,
                "last_id": files[-1].id if files else None,
                "has_more": more,
            }
        )

    return await api_call(request, work)


def _file(call: ApiCall, request: Request) -> StoredFile:
    wanted = request.path_params["file_id"]
    stored = call.sandbox.uploads.get(wanted)
    if stored is None:
        raise no_such_file(wanted)
    return stored


async def retrieve_file(request: Request) -> Response:
    """``GET /v1/files/{file_id}``."""

    async def work(call: ApiCall) -> Response:
        return JSONResponse(_file(call, request).to_json())

    return await api_call(request, work)


async def file_content(request: Request) -> Response:
    """``GET /v1/files/{file_id}/content``: the bytes, streamed from disk."""

    async def work(call: ApiCall) -> Response:
        stored = _file(call, request)
        return FileResponse(stored.path, media_type="application/octet-stream")

    return await api_call(request, work)


async def delete_file(request: Request) -> Response:
    """``DELETE /v1/files/{file_id}``."""

    async def work(call: ApiCall) -> Response:
        stored = _file(call, request)
        call.sandbox.uploads.delete(stored.id)
        return JSONResponse({"id": stored.id, "object": "file", "deleted": True})

    return await api_call(request, work)
