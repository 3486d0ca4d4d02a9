"""A loopback HTTP server that records every request's exact bytes and answers like OpenAI.

It is written on raw asyncio streams, with no HTTP library, so that what it records is what came
over the wire. Image calls get a real image of the asked size and format (``n`` of them) and a
``usage``; ``/responses`` calls get one ``image_generation_call``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from PIL import Image

USAGE = {
    "input_tokens": 50,
    "output_tokens": 272,
    "total_tokens": 322,
    "input_tokens_details": {"text_tokens": 50, "image_tokens": 0},
}


@dataclass(frozen=True, slots=True)
class Captured:
    """One request as it arrived."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> list[tuple[str, str | None, str, bytes]]:
        """Multipart parts as (field name, file name, content type, content), sorted."""
        head = f"Content-Type: {self.headers['content-type']}\r\n\r\n".encode()
        message = BytesParser(policy=HTTP).parsebytes(head + self.body)
        parts: list[tuple[str, str | None, str, bytes]] = []
        for part in message.iter_parts():
            assert isinstance(part, Message)
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            assert isinstance(name, str)
            assert isinstance(payload, bytes)
            parts.append((name, part.get_filename(), part.get_content_type(), payload))
        return sorted(parts)


@dataclass(slots=True)
class CaptureServer:
    port: int = 0
    requests: list[Captured] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (request := await _read_request(reader)) is not None:
                self.requests.append(request)
                writer.write(_answer(request))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def capture_server() -> AsyncIterator[CaptureServer]:
    capture = CaptureServer()
    server = await asyncio.start_server(capture.handle, "127.0.0.1", 0)
    capture.port = server.sockets[0].getsockname()[1]
    try:
        yield capture
    finally:
        server.close()
        await server.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> Captured | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = await _read_chunked(reader)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Captured(method=method, path=path, headers=headers, body=body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)
    await reader.readuntil(b"\r\n")
    return b"".join(chunks)


def _asked(request: Captured) -> tuple[tuple[int, int], int, str]:
    if request.headers.get("content-type", "").startswith("multipart/"):
        fields = {name: value.decode() for name, file, _, value in request.form() if not file}
    else:
        body = request.json()
        fields = body.get("tools", [body])[0] | {"n": body.get("n", 1)}
    size = fields.get("size") or "1024x1024"
    match = re.fullmatch(r"(\d+)x(\d+)", str(size))
    dims = (int(match[1]), int(match[2])) if match else (1024, 1024)
    return dims, int(fields.get("n") or 1), str(fields.get("output_format") or "png")


def _image(size: tuple[int, int], fmt: str) -> str:
    out = io.BytesIO()
    Image.new("RGB", size, (90, 140, 200)).save(out, fmt.upper())
    return base64.b64encode(out.getvalue()).decode()


def _answer(request: Captured) -> bytes:
    size, count, fmt = _asked(request)
    image = _image(size, fmt)
    if request.path.endswith("/responses"):
        call = {"type": "image_generation_call", "id": "ig_1", "status": "completed"}
        body: dict[str, Any] = {
            "id": "resp_1",
            "object": "response",
            "created_at": 0,
            "status": "completed",
            "model": "gpt-5.5",
            "output": [call | {"result": image}],
            "usage": {"input_tokens": 20, "output_tokens": 10, "total_tokens": 30},
        }
    else:
        body = {"created": 0, "data": [{"b64_json": image}] * count, "usage": USAGE}
    payload = json.dumps(body).encode()
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        f"x-request-id: req_{len(payload)}\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload
