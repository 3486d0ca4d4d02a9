"""The official ``openai`` SDK as the reference for what a request looks like.

For each shape and parameter set, imagerun runs one job and the SDK makes the same call, both
against one loopback server that records the bytes. The two requests must agree on method, path,
credentials and body: JSON fields for JSON calls; for multipart edits, every part's field name,
file name, content type and content.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from PIL import Image

from runner import app
from runner.config import load_settings
from runner.run.worker import RunOptions
from tests.e2e.harness import png
from tests.peers.capture import Captured, CaptureServer, capture_server

pytestmark = pytest.mark.anyio

KEY = "sk-reference"
PROMPT = "a brass desk lamp on walnut, studio light"
SdkCall = Callable[[openai.AsyncOpenAI, Path], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Case:
    route: str
    line: dict[str, Any]
    sdk: SdkCall


def _data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _tool(**options: Any) -> dict[str, Any]:
    return {"type": "image_generation", "model": "gpt-image-2", **options}


def _responses_input(folder: Path, *images: str) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = [{"type": "input_text", "text": PROMPT}]
    content += [{"type": "input_image", "image_url": _data_url(folder / i)} for i in images]
    return [{"role": "user", "content": content}]


CASES = {
    "generation, defaults": Case(
        "openai",
        {"prompt": PROMPT},
        lambda c, d: c.images.generate(model="gpt-image-2", prompt=PROMPT),
    ),
    "generation, every option": Case(
        "openai",
        {
            "prompt": PROMPT,
            "size": "1536x1024",
            "quality": "high",
            "n": 2,
            "output_format": "jpeg",
            "output_compression": 80,
            "background": "opaque",
            "moderation": "low",
        },
        lambda c, d: c.images.generate(
            model="gpt-image-2",
            prompt=PROMPT,
            size="1536x1024",
            quality="high",
            n=2,
            output_format="jpeg",
            output_compression=80,
            background="opaque",
            moderation="low",
        ),
    ),
    "edit, one image": Case(
        "openai",
        {"prompt": PROMPT, "images": ["a.png"], "size": "1024x1024", "quality": "medium"},
        lambda c, d: c.images.edit(
            model="gpt-image-2",
            prompt=PROMPT,
            image=[d / "a.png"],
            size="1024x1024",
            quality="medium",
        ),
    ),
    "edit, two images and a mask": Case(
        "openai",
        {"prompt": PROMPT, "images": ["a.png", "b.png"], "mask": "mask.png", "n": 2},
        lambda c, d: c.images.edit(
            model="gpt-image-2",
            prompt=PROMPT,
            image=[d / "a.png", d / "b.png"],
            mask=d / "mask.png",
            n=2,
        ),
    ),
    "responses, generation": Case(
        "openai-responses",
        {"prompt": PROMPT, "size": "1024x1536", "quality": "low"},
        lambda c, d: c.responses.create(
            model="gpt-5.5",
            input=_responses_input(d),  # type: ignore[arg-type]
            tools=[_tool(size="1024x1536", quality="low", action="generate")],  # type: ignore[list-item]
            tool_choice={"type": "image_generation"},
        ),
    ),
    "responses, edit": Case(
        "openai-responses",
        {"prompt": PROMPT, "images": ["a.png"], "output_format": "webp"},
        lambda c, d: c.responses.create(
            model="gpt-5.5",
            input=_responses_input(d, "a.png"),  # type: ignore[arg-type]
            tools=[_tool(output_format="webp", action="edit")],  # type: ignore[list-item]
            tool_choice={"type": "image_generation"},
        ),
    ),
}


def _sources(folder: Path) -> None:
    (folder / "a.png").write_bytes(png(64, 64, (200, 40, 40)))
    (folder / "b.png").write_bytes(png(48, 32, (40, 200, 40)))
    # A mask needs an alpha channel: transparent is the area to edit.
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(folder / "mask.png")


async def _imagerun_request(tmp_path: Path, server: CaptureServer, case: Case) -> Captured:
    env_name = case.route.upper().replace("-", "_")
    settings = load_settings(
        db=f"sqlite+aiosqlite:///{tmp_path / 'imagerun.db'}",
        data=tmp_path / "data",
        environ={f"IMAGERUN_ROUTE_{env_name}_BASE_URL": server.base_url, "OPENAI_API_KEY": KEY},
    )
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text(json.dumps(case.line) + "\n", "utf-8")
    await app.submit(settings, manifest, case.route, name="reference")
    result = await app.run(settings, [], RunOptions(handle_signals=False))
    assert result.report is not None
    assert result.report.clean, result.report
    [request] = server.requests
    return request


async def _sdk_request(tmp_path: Path, server: CaptureServer, case: Case) -> Captured:
    before = len(server.requests)
    async with openai.AsyncOpenAI(base_url=server.base_url, api_key=KEY, max_retries=0) as client:
        await case.sdk(client, tmp_path)
    [request] = server.requests[before:]
    return request


@pytest.mark.parametrize("name", list(CASES))
async def test_imagerun_sends_what_the_official_sdk_sends(tmp_path: Path, name: str) -> None:
    case = CASES[name]
    _sources(tmp_path)
    async with capture_server() as server:
        ours = await _imagerun_request(tmp_path, server, case)
        reference = await _sdk_request(tmp_path, server, case)

    assert (ours.method, ours.path) == (reference.method, reference.path)
    assert ours.headers["authorization"] == reference.headers["authorization"] == f"Bearer {KEY}"
    media = ours.headers["content-type"].split(";")[0]
    assert media == reference.headers["content-type"].split(";")[0]
    if media == "application/json":
        assert ours.json() == reference.json()
    else:
        assert ours.form() == reference.form()
