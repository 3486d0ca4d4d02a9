"""Our Files and Batches calls look like the official ``openai`` SDK's (the reference):
captured on a loopback server, their method, path, content type, multipart field names and
JSON body keys are compared."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import httpx
import openai
import pytest

from runner.http.client import ApiClient
from runner.remote.client import RemoteClient
from runner.remote.prepare import INPUT_PURPOSE, JSONL, input_filename
from tests.peers.capture import Captured, CaptureServer, _read_request

pytestmark = pytest.mark.anyio

FILE = {
    "id": "file-abc",
    "object": "file",
    "bytes": 10,
    "created_at": 1,
    "filename": "x",
    "purpose": "batch",
    "status": "processed",
}
BATCH = {
    "id": "batch_abc",
    "object": "batch",
    "endpoint": "/v1/images/generations",
    "input_file_id": "file-abc",
    "completion_window": "24h",
    "status": "validating",
    "created_at": 1,
    "request_counts": {"total": 0, "completed": 0, "failed": 0},
}


class ObjectServer(CaptureServer):
    """Records each request and answers with a File or Batch object."""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (request := await _read_request(reader)) is not None:
                self.requests.append(request)
                body = json.dumps(FILE if "/files" in request.path else BATCH).encode()
                head = (
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                )
                writer.write(head.encode() + body)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def captured(work: object) -> list[Captured]:
    capture = ObjectServer()
    server = await asyncio.start_server(capture.handle, "127.0.0.1", 0)
    capture.port = server.sockets[0].getsockname()[1]
    try:
        await work(capture.base_url)  # type: ignore[operator]
    finally:
        server.close()
        await server.wait_closed()
    return capture.requests


def shape(request: Captured) -> dict[str, object]:
    """What must agree: method, path, content type, multipart fields or JSON keys."""
    kind = request.headers["content-type"].split(";")[0]
    out: dict[str, object] = {"method": request.method, "path": request.path, "type": kind}
    if kind == "multipart/form-data":
        out["fields"] = [(name, file is not None) for name, file, _, _ in request.form()]
        out["values"] = {name: value for name, file, _, value in request.form() if not file}
        out["file"] = [(file, mime, value) for _, file, mime, value in request.form() if file]
    else:
        out["keys"] = sorted(request.json())
        out["body"] = request.json()
    return out


async def test_upload_and_create_match_the_official_sdk(tmp_path: Path) -> None:
    content = b'{"custom_id": "ir-1", "method": "POST", "url": "/v1/images/generations"}\n'
    path = tmp_path / "input.jsonl"
    path.write_bytes(content)
    name = input_filename("rb0001")
    metadata = {"imagerun_batch": "b1", "imagerun_remote_batch": "rb0001"}

    async def sdk(base: str) -> None:
        client = openai.AsyncOpenAI(base_url=base, api_key="sk-test", max_retries=0)
        await client.files.create(file=(name, io.BytesIO(content), JSONL), purpose="batch")
        await client.batches.create(
            input_file_id="file-abc",
            endpoint="/v1/images/generations",
            completion_window="24h",
            metadata=metadata,
        )
        await client.close()

    async def ours(base: str) -> None:
        timeout = httpx.Timeout(10.0)
        async with ApiClient(base, api_key="sk-test", timeout=timeout) as api:
            remote = RemoteClient(api)
            await remote.upload(path, filename=name, purpose=INPUT_PURPOSE, mime=JSONL)
            await remote.create(
                input_file_id="file-abc", endpoint="/v1/images/generations", metadata=metadata
            )

    theirs, mine = await captured(sdk), await captured(ours)

    assert [shape(r) for r in mine] == [shape(r) for r in theirs]
    assert all(r.headers["authorization"] == "Bearer sk-test" for r in mine)
