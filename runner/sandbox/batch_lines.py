"""A batch's input and output lines: checking the input file, and writing result lines.

Input lines are ``{"custom_id", "method": "POST", "url", "body"}``. The whole file is checked
before any line runs (the ``validating`` step); a file with any bad line fails as a whole,
with one error per line (at most :data:`MAX_LISTED_ERRORS`). Only line positions are kept,
not the lines: a line is read again from disk when it runs.

Output lines are ``{"id": "batch_req_…", "custom_id", "response": {"status_code",
"request_id", "body"}, "error": null}``; a line that never ran (expired, cancelled) has
``response: null`` and an ``error`` object instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: A Batch API input file may hold this many requests.
MAX_BATCH_LINES = 50_000
#: Validation errors listed on a failed batch (the rest are not reported).
MAX_LISTED_ERRORS = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class InputPlan:
    """A valid input file: where each request line is, and the model they all name.

    Attributes:
        spans: ``(offset, length)`` of each request line in the file, in file order.
        model: the ``body.model`` every line names (``None`` if none names one).
    """

    spans: list[tuple[int, int]]
    model: str | None


def batch_error(
    code: str, message: str, *, param: str | None = None, line: int | None = None
) -> dict[str, Any]:
    """One entry of a failed batch's ``errors.data``."""
    return {"code": code, "message": message, "param": param, "line": line}


def _lines(path: Path) -> Iterator[tuple[int, int, bytes]]:
    offset = 0
    with path.open("rb") as source:
        for raw in source:
            yield offset, len(raw), raw
            offset += len(raw)


def _check_line(raw: bytes, endpoint: str) -> dict[str, Any] | tuple[str, str, str | None]:
    """The parsed line, or ``(code, message, param)`` saying what is wrong with it."""
    try:
        line = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return "invalid_json_line", "This line is not parseable as valid JSON.", None
    if not isinstance(line, dict):
        return "invalid_json_line", "This line is not a JSON object.", None
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return "missing_required_parameter", "Missing required parameter 'custom_id'.", "custom_id"
    if line.get("method") != "POST":
        return "invalid_method", "The method for this request must be POST.", "method"
    if line.get("url") != endpoint:
        message = f"The url for this request does not match the batch endpoint {endpoint}."
        return "mismatched_endpoint", message, "url"
    if not isinstance(line.get("body"), dict):
        return "invalid_request", "The body for this request must be a JSON object.", "body"
    return line


def check_input(path: Path, endpoint: str) -> InputPlan | list[dict[str, Any]]:
    """The plan of a valid input file, or the errors that fail the batch.

    Blocking (reads the whole file): run it in a worker thread.
    """
    spans: list[tuple[int, int]] = []
    seen: set[str] = set()
    problems: list[dict[str, Any]] = []
    models: set[str | None] = set()
    for number, (offset, length, raw) in enumerate(_lines(path), start=1):
        if not raw.strip():
            continue
        spans.append((offset, length))
        checked = _check_line(raw, endpoint)
        if isinstance(checked, tuple):
            code, message, param = checked
            problems.append(batch_error(code, message, param=param, line=number))
        elif checked["custom_id"] in seen:
            message = (
                "The custom_id for this request is a duplicate of another request. "
                "The custom_id parameter must be unique for each request in a batch."
            )
            problems.append(
                batch_error("duplicate_custom_id", message, param="custom_id", line=number)
            )
        else:
            seen.add(checked["custom_id"])
            model = checked["body"].get("model")
            models.add(model if isinstance(model, str) else None)
        if len(problems) >= MAX_LISTED_ERRORS:
            break
    if not problems and not spans:
        problems.append(batch_error("empty_file", "The input file has no requests."))
    if len(spans) > MAX_BATCH_LINES:
        message = f"The input file has {len(spans)} requests: at most {MAX_BATCH_LINES} allowed."
        problems.append(batch_error("too_many_requests", message))
    named = {m for m in models if m is not None}
    if len(named) > 1:
        message = (
            f"All requests of a batch must use the same model: found {', '.join(sorted(named))}."
        )
        problems.append(batch_error("mismatched_model", message, param="body.model"))
    if problems:
        return problems[:MAX_LISTED_ERRORS]
    return InputPlan(spans=spans, model=next(iter(named), None))


def read_span(path: Path, span: tuple[int, int]) -> dict[str, Any]:
    """The input line at ``span`` (checked by :func:`check_input` already)."""
    offset, length = span
    with path.open("rb") as source:
        source.seek(offset)
        line: dict[str, Any] = json.loads(source.read(length))
    return line


def response_line(
    line_id: str, custom_id: str, status: int, request_id: str, body: bytes
) -> tuple[bytes, ...]:
    """An output line around a response ``body`` that is already JSON, in pieces to write one
    after the other (the body, megabytes of base64, is neither re-encoded nor copied)."""
    head = json.dumps({"id": line_id, "custom_id": custom_id})[:-1]
    response = f'"response": {{"status_code": {status}, "request_id": {json.dumps(request_id)}'
    return (f'{head}, {response}, "body": '.encode(), body, b'}, "error": null}\n')


def unrun_line(line_id: str, custom_id: str, code: str, message: str) -> tuple[bytes, ...]:
    """An error-file line for a request that never ran."""
    error = {"code": code, "message": message}
    item = {"id": line_id, "custom_id": custom_id, "response": None, "error": error}
    return (json.dumps(item).encode() + b"\n",)
