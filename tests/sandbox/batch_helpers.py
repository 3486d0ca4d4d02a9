"""Helpers for the Files and Batch API tests: input files, polling, reading result files."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterable
from typing import Any

import openai
from openai.types import Batch, FileObject
from pydantic import BaseModel

from runner.sandbox import SandboxHandle

FINAL = ("completed", "failed", "expired", "cancelled")
GENERATIONS = "/v1/images/generations"
EDITS = "/v1/images/edits"


def client(handle: SandboxHandle, **options: Any) -> openai.OpenAI:
    """The official SDK pointed at the sandbox's official profile."""
    return openai.OpenAI(base_url=handle.openai_base, api_key="sk-test", max_retries=0, **options)


def line(custom_id: str, body: dict[str, Any], url: str = GENERATIONS) -> dict[str, Any]:
    """One batch input line."""
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def generation(custom_id: str, prompt: str, **params: Any) -> dict[str, Any]:
    """A generation line for gpt-image-2."""
    return line(custom_id, {"model": "gpt-image-2", "prompt": prompt, **params})


def jsonl(lines: Iterable[dict[str, Any]]) -> bytes:
    """An input file's bytes."""
    return b"".join(json.dumps(item).encode() + b"\n" for item in lines)


def upload(
    sdk: openai.OpenAI, data: bytes, name: str = "input.jsonl", purpose: Any = "batch"
) -> FileObject:
    """``files.create`` with ``data`` as the file."""
    return sdk.files.create(file=(name, io.BytesIO(data)), purpose=purpose)


def start(
    sdk: openai.OpenAI, lines: Iterable[dict[str, Any]], endpoint: Any = GENERATIONS
) -> Batch:
    """Upload ``lines`` and create a batch of them."""
    file = upload(sdk, jsonl(lines))
    return sdk.batches.create(input_file_id=file.id, endpoint=endpoint, completion_window="24h")


def wait(sdk: openai.OpenAI, batch_id: str, timeout: float = 30.0) -> Batch:
    """Poll until the batch is in a final state; the last batch object."""
    deadline = time.monotonic() + timeout
    batch = sdk.batches.retrieve(batch_id)
    pause = 0.05
    while batch.status not in FINAL:
        assert time.monotonic() < deadline, f"batch still {batch.status} after {timeout}s"
        time.sleep(pause)
        # Polled ever less often, up to twice a second: each poll takes the sandbox's CPU
        # (it serves in this process), which a large batch's lines need.
        pause = min(0.5, pause * 1.5)
        batch = sdk.batches.retrieve(batch_id)
    return batch


def result_lines(sdk: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    """The lines of an output or error file (none when the batch has no such file)."""
    if file_id is None:
        return []
    text = sdk.files.content(file_id).text
    return [json.loads(row) for row in text.splitlines() if row.strip()]


def assert_exact(obj: BaseModel) -> None:
    """The SDK parsed ``obj`` with no field it does not know and every required one set."""
    assert not obj.model_extra, f"fields the SDK does not know: {obj.model_extra}"
    required = {name for name, info in type(obj).model_fields.items() if info.is_required()}
    assert required <= obj.model_fields_set
    for value in obj.__dict__.values():
        if isinstance(value, BaseModel):
            assert_exact(value)
