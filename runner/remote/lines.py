"""One job ↔ one line of a remote batch's JSONL files.

An input line is ``{"custom_id", "method", "url", "body"}``: ``custom_id`` is the attempt's
id (our client request id), ``url`` the provider endpoint with its ``/v1`` prefix, and
``body`` what the ``batch`` shape builds (the Images API's JSON body). An edit's source
images travel inline as data URLs while the line stays under the route's
``batch_max_line_bytes``; past that the largest are uploaded as files and referenced by
``file_id``.

Output and error lines are ``{"id", "custom_id", "response": {"status_code", "request_id",
"body"}, "error"}``: a 200 is an answer (an ImagesResponse), anything else an error classified
by the same tables as a synchronous error's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from runner.errors import AttemptError
from runner.http.classify import CODE_MAP, classify_error
from runner.models import Outcome
from runner.shapes import LoadedImage, PreparedRequest

#: The provider's endpoints carry the API version in the line's ``url``.
API_PREFIX = "/v1"
#: Placeholder prefix of a source image to be replaced by its uploaded file's id.
_SOURCE = "imagerun-source:"
#: Line-level error codes of lines the provider never ran (the remote batch ended first).
NOT_RUN = frozenset({"batch_expired", "batch_cancelled"})


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceUpload:
    """A source image that goes to the provider as a file, not inline.

    Attributes:
        key: the sha256 of its bytes (the same image is uploaded once per remote batch).
    """

    key: str
    data: bytes
    mime: str
    filename: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedLine:
    """A line's body with its large sources replaced by placeholders, and its size."""

    endpoint: str
    body: dict[str, Any]
    #: What the ledger records as sent (never bytes).
    params: dict[str, Any]
    uploads: tuple[SourceUpload, ...]
    #: Bytes of the encoded line (file ids are counted at their placeholder's length).
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LineAnswer:
    """What one output or error line says about its attempt.

    Exactly one of ``body`` (a 200's ImagesResponse) and ``error`` is set; ``ran`` is false
    for a line the provider never ran (the remote batch expired or was cancelled first).
    """

    custom_id: str
    request_id: str | None
    status: int | None
    body: Any = None
    error: AttemptError | None = None
    ran: bool = True


def endpoint_url(endpoint: str) -> str:
    """The provider endpoint of a shape endpoint (``/images/edits`` → ``/v1/images/edits``)."""
    return API_PREFIX + endpoint


def plan_line(
    prepared: PreparedRequest,
    images: list[LoadedImage],
    mask: LoadedImage | None,
    *,
    max_line_bytes: int,
) -> PlannedLine:
    """The line for ``prepared``: sources inline while it fits ``max_line_bytes``, else the
    largest moved into uploads until it does (or none is left inline)."""
    body = dict(prepared.json or {})
    refs: list[tuple[str, LoadedImage]] = [(f"images.{i}", img) for i, img in enumerate(images)]
    if mask is not None:
        refs.append(("mask", mask))
    size = _size(body)
    uploads: dict[str, SourceUpload] = {}
    by_size = sorted(refs, key=lambda ref: len(ref[1].url), reverse=True)
    for where, image in by_size:
        if size <= max_line_bytes:
            break
        if image.data is None:  # an https URL: short, nothing to upload
            continue
        key = hashlib.sha256(image.data).hexdigest()
        uploads.setdefault(
            key, SourceUpload(key=key, data=image.data, mime=image.mime, filename=image.filename)
        )
        _replace(body, where, {"file_id": _SOURCE + key})
        size = _size(body)
    return PlannedLine(
        endpoint=prepared.endpoint,
        body=body,
        params=prepared.params_sent,
        uploads=tuple(uploads.values()),
        size=size,
    )


def encode_line(custom_id: str, planned: PlannedLine, file_ids: Mapping[str, str]) -> bytes:
    """The JSONL line (with its newline), placeholders replaced by the uploaded files' ids."""
    body = planned.body
    if planned.uploads:
        body = _with_file_ids(body, file_ids)
    line = {
        "custom_id": custom_id,
        "method": "POST",
        "url": endpoint_url(planned.endpoint),
        "body": body,
    }
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def read_answer(raw: bytes) -> LineAnswer:
    """The answer one output or error line carries.

    Raises:
        ValueError: the line is not JSON or has no ``custom_id``.
    """
    line = json.loads(raw)
    if not isinstance(line, dict) or not line.get("custom_id"):
        raise ValueError("result line without custom_id")
    custom_id = str(line["custom_id"])
    response = line.get("response") if isinstance(line.get("response"), dict) else None
    if response is None:
        return _line_error(custom_id, line.get("error"))
    status = int(response.get("status_code") or 0)
    request_id = response.get("request_id") or None
    body = response.get("body")
    if status == 200:
        return LineAnswer(custom_id=custom_id, request_id=request_id, status=200, body=body)
    content = json.dumps(body).encode() if not isinstance(body, str) else body.encode()
    error = classify_error(status, httpx.Headers(), content)
    error.provider_request_id = request_id
    return LineAnswer(custom_id=custom_id, request_id=request_id, status=status, error=error)


def _line_error(custom_id: str, raw: Any) -> LineAnswer:
    """A line the provider answered without a response (it never reached the endpoint)."""
    error = raw if isinstance(raw, dict) else {}
    code = str(error.get("code") or "") or None
    message = str(error.get("message") or code or "remote batch line failed")
    outcome = CODE_MAP.get(code or "", Outcome.INVALID_REQUEST)
    failure = AttemptError(outcome, message, error_code=code, sent=False)
    ran = code not in NOT_RUN
    return LineAnswer(custom_id=custom_id, request_id=None, status=None, error=failure, ran=ran)


def _size(body: dict[str, Any]) -> int:
    # The envelope around the body: custom_id (27 chars), method, url, braces and newline.
    return len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()) + 110


def _replace(body: dict[str, Any], where: str, ref: dict[str, str]) -> None:
    if where == "mask":
        body["mask"] = ref
        return
    index = int(where.partition(".")[2])
    images = list(body["images"])
    images[index] = ref
    body["images"] = images


def _with_file_ids(body: dict[str, Any], file_ids: Mapping[str, str]) -> dict[str, Any]:
    def swap(ref: Any) -> Any:
        if isinstance(ref, dict) and str(ref.get("file_id", "")).startswith(_SOURCE):
            return {"file_id": file_ids[ref["file_id"].removeprefix(_SOURCE)]}
        return ref

    out = dict(body)
    if "images" in out:
        out["images"] = [swap(ref) for ref in out["images"]]
    if "mask" in out:
        out["mask"] = swap(out["mask"])
    return out
