"""The index row: one schema shared by every format that writes an index.

``results.jsonl`` (the ``files`` layout), ``jsonl``, ``csv``, ``parquet`` and the
WebDataset ``.json`` members all carry these columns, in this order. Failed and unknown jobs
(``--include-failed``) have the same columns with the output fields empty.

Money columns: ``expected_usd`` / ``observed_usd`` / ``charge_status`` are the request that
produced the row (for a failed job, its last request); ``job_expected_usd`` /
``job_observed_usd`` sum every attempt of the job, retries included. A request (and a job)
with ``n`` outputs has its cost repeated on each of its ``n`` rows: sum per job, not per row.

``asked`` / ``got``: where an image is not what its job asked for (another size or format),
what was asked and what came, e.g. ``1024x1024`` and ``96x64``; empty when they agree.

``route`` is the route of the request that produced the row; ``remote_batch_id``, on a Batch
API route (``openai-batch``), the provider's id of the remote batch that request was a line of
(its ``request_id`` is then the line's ``custom_id``); empty on synchronous routes.

``edit_fidelity`` / ``edit_flag``: on an edit's rows, how much of its first source survives
(0-1, :mod:`runner.files.fidelity`) and ``ok``, ``ignored_source`` or ``unchanged``; empty on
generations and on edits whose source is only a URL.
"""

from __future__ import annotations

import json
from typing import Any

from runner.store.exports import ExportJob, ExportOutput
from runner.store.records import BatchInfo

COLUMNS = (
    "batch_id",
    "batch",
    "id",
    "index",
    "k",
    "status",
    "prompt",
    "route",
    "provider",
    "model",
    "parameters",
    "path",
    "sha256",
    "width",
    "height",
    "format",
    "bytes",
    "asked",
    "got",
    "edit_fidelity",
    "edit_flag",
    "request_id",
    "provider_request_id",
    "gateway_request_id",
    "remote_batch_id",
    "attempts",
    "expected_usd",
    "observed_usd",
    "charge_status",
    "job_expected_usd",
    "job_observed_usd",
    "outcome",
    "error",
    "metadata",
)
#: Columns whose values are JSON objects (a JSON-string column in CSV and Parquet).
OBJECT_COLUMNS = ("parameters", "metadata")


def index_row(row: ExportJob, batch: BatchInfo) -> dict[str, Any]:
    """The index row of an output, or of a failed/unknown job."""
    record: dict[str, Any] = {
        "batch_id": batch.id,
        "batch": batch.name,
        "id": row.ext_id,
        "index": row.index,
        "k": None,
        "status": row.state,
        "prompt": row.prompt,
        "route": row.route,
        "provider": row.provider,
        "model": row.model,
        "parameters": row.params,
        "path": None,
        "sha256": None,
        "width": None,
        "height": None,
        "format": None,
        "bytes": None,
        "asked": None,
        "got": None,
        "edit_fidelity": None,
        "edit_flag": None,
        "request_id": row.request_id,
        "provider_request_id": row.provider_request_id,
        "gateway_request_id": row.gateway_request_id,
        "remote_batch_id": row.remote_batch_id,
        "attempts": row.attempts,
        "expected_usd": row.expected_usd,
        "observed_usd": row.observed_usd,
        "charge_status": row.charge_status,
        "job_expected_usd": row.job_expected_usd,
        "job_observed_usd": row.job_observed_usd,
        "outcome": row.last_outcome,
        "error": row.last_error,
        "metadata": row.metadata,
    }
    if isinstance(row, ExportOutput):
        # Assigning existing keys keeps the column order.
        record.update(
            k=row.k,
            path=row.path,
            sha256=row.sha256,
            width=row.width,
            height=row.height,
            format=row.format,
            bytes=row.bytes,
            asked=row.asked,
            got=row.got,
            edit_fidelity=row.edit_fidelity,
            edit_flag=row.edit_flag,
        )
    return record


def json_line(row: dict[str, Any]) -> str:
    """One JSONL line (UTF-8 text, not ASCII-escaped), newline included.

    U+2028 and U+2029 stay escaped: some line readers (Python's ``str.splitlines``, for one)
    would otherwise split a record in two.
    """
    text = json.dumps(row, ensure_ascii=False)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029") + "\n"


def json_text(value: Any) -> str:
    """A compact JSON string, for object columns in flat formats."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
