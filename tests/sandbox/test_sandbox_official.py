"""The official profile (/openai/v1) in-process: bodies, headers, size rules, errors."""

from __future__ import annotations

import base64
import json
import re

import pytest

from runner.sandbox import SandboxConfig
from runner.sandbox.tokens import input_image_tokens, output_image_tokens, text_tokens

from .helpers import OPENAI_KEY, InProcess, auth, decode_b64, image_of, png_bytes, rgb_at

pytestmark = pytest.mark.anyio

GEN = "/openai/v1/images/generations"
EDIT = "/openai/v1/images/edits"


def error_of(response: object) -> dict[str, object]:
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


async def test_generation_returns_plain_b64_png_of_the_flexible_size(in_process: InProcess) -> None:
    async with in_process() as (client, sandbox):
        response = await client.post(
            GEN,
            json={
                "model": "gpt-image-2",
                "prompt": "a lighthouse",
                "size": "1536x864",
                "quality": "high",
            },
            headers=auth(OPENAI_KEY, **{"X-Client-Request-Id": "ours-1"}),
        )
    assert response.status_code == 200
    body = response.json()
    value = body["data"][0]["b64_json"]
    assert not value.startswith("data:")
    image = image_of(base64.b64decode(value, validate=True))
    assert (image.format, image.size) == ("PNG", (1536, 864))
    assert (body["size"], body["quality"], body["output_format"], body["background"]) == (
        "1536x864",
        "high",
        "png",
        "opaque",
    )
    usage = body["usage"]
    assert usage["output_tokens"] == output_image_tokens(1536, 864, "high")
    assert usage["input_tokens_details"] == {
        "text_tokens": text_tokens("a lighthouse"),
        "image_tokens": 0,
    }
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert re.fullmatch(r"req_[0-9a-f]{32}", response.headers["x-request-id"])
    assert int(response.headers["openai-processing-ms"]) >= 0
    [record] = sandbox.requests()
    assert record.client_request_id == "ours-1"
    assert record.provider_request_id == response.headers["x-request-id"]
    assert (record.status, record.group, record.model, record.prompt) == (
        200,
        "openai",
        "gpt-image-2",
        "a lighthouse",
    )


async def test_output_tokens_follow_the_derived_gpt_image_2_table() -> None:
    assert output_image_tokens(1024, 1024, "low") == 200
    assert output_image_tokens(1024, 1024, "medium") == 1767
    assert output_image_tokens(1536, 1024, "high") == 5500
    assert output_image_tokens(1024, 1536, "medium") == 1367
    assert output_image_tokens(2048, 2048, "low") == 800  # square row scaled by area
    assert output_image_tokens(1024, 1024, "auto") == 1767  # auto counts as medium
    assert input_image_tokens(1024, 1024) == 765


@pytest.mark.parametrize(("fmt", "pil"), [("jpeg", "JPEG"), ("webp", "WEBP")])
async def test_output_format_gives_real_bytes_of_that_format(
    in_process: InProcess, fmt: str, pil: str
) -> None:
    async with in_process() as (client, _):
        response = await client.post(
            GEN,
            json={
                "model": "gpt-image-2",
                "prompt": "fmt",
                "output_format": fmt,
                "output_compression": 50,
            },
            headers=auth(OPENAI_KEY),
        )
    image = image_of(base64.b64decode(response.json()["data"][0]["b64_json"]))
    assert (image.format, image.size) == (pil, (1024, 1024))


async def test_same_prompt_same_bytes_other_prompt_other_bytes(in_process: InProcess) -> None:
    async with in_process() as (client, _):

        async def image(prompt: str) -> bytes:
            body = {"model": "gpt-image-2", "prompt": prompt, "size": "1024x1024"}
            response = await client.post(GEN, json=body, headers=auth(OPENAI_KEY))
            return base64.b64decode(response.json()["data"][0]["b64_json"])

        first, again, other = (
            await image("a red fox"),
            await image("a red fox"),
            await image("a blue whale"),
        )
    assert first == again
    assert first != other
    # Visibly different: the average colours differ, not just a few pixels.
    mean = [rgb_at(image_of(b).resize((1, 1)), 0, 0) for b in (first, other)]
    assert sum(abs(a - b) for a, b in zip(mean[0], mean[1], strict=True)) > 30


async def test_n_images_are_distinct_and_transparent_background_has_alpha(
    in_process: InProcess,
) -> None:
    async with in_process() as (client, _):
        response = await client.post(
            GEN,
            json={"model": "gpt-image-2", "prompt": "sticker", "n": 2, "background": "transparent"},
            headers=auth(OPENAI_KEY),
        )
    body = response.json()
    images = [base64.b64decode(item["b64_json"]) for item in body["data"]]
    assert len(images) == 2
    assert images[0] != images[1]
    assert body["background"] == "transparent"
    assert image_of(images[0]).mode == "RGBA"
    assert body["usage"]["output_tokens"] == 2 * output_image_tokens(1024, 1024, "medium")


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"response_format": "b64_json"}, 400, "unknown_parameter", "response_format"),
        ({"size": "1000x1000"}, 400, "invalid_value", "size"),  # not a multiple of 16
        ({"size": "4096x1024"}, 400, "invalid_value", "size"),  # edge above 3840
        ({"quality": "ultra"}, 400, "invalid_value", "quality"),
        ({"n": 11}, 400, "invalid_value", "n"),
        ({"output_format": "gif"}, 400, "invalid_value", "output_format"),
        (
            {"background": "transparent", "output_format": "jpeg"},
            400,
            "invalid_value",
            "background",
        ),
        ({"stream": True}, 400, "invalid_value", "stream"),
        ({"model": "gpt-image-1.5", "size": "2048x2048"}, 400, "invalid_value", "size"),
        ({"model": "dall-e-3"}, 404, "model_not_found", None),
        ({"prompt": None}, 400, "missing_required_parameter", "prompt"),
    ],
)
async def test_invalid_requests_get_the_reference_error_shape(
    in_process: InProcess, body: dict[str, object], status: int, code: str, param: str | None
) -> None:
    request = {"model": "gpt-image-2", "prompt": "x", **body}
    request = {k: v for k, v in request.items() if v is not None}
    async with in_process() as (client, sandbox):
        response = await client.post(GEN, json=request, headers=auth(OPENAI_KEY))
    assert response.status_code == status
    error = error_of(response)
    assert (error["code"], error["param"]) == (code, param)
    assert error["type"] == "invalid_request_error"
    assert sandbox.requests()[0].outcome == "invalid_request"


async def test_legacy_model_accepts_legacy_sizes(in_process: InProcess) -> None:
    async with in_process() as (client, _):
        response = await client.post(
            GEN,
            json={"model": "gpt-image-1.5", "prompt": "x", "size": "1024x1536"},
            headers=auth(OPENAI_KEY),
        )
    assert image_of(base64.b64decode(response.json()["data"][0]["b64_json"])).size == (1024, 1536)


async def test_bad_and_missing_keys_get_401_invalid_api_key(in_process: InProcess) -> None:
    async with in_process() as (client, sandbox):
        bad = await client.post(GEN, json={"prompt": "x"}, headers=auth("sk-invalid-key"))
        missing = await client.post(GEN, json={"prompt": "x"})
    assert bad.status_code == missing.status_code == 401
    assert error_of(bad)["code"] == "invalid_api_key"
    assert "sk-invalid-key" not in bad.text  # the key is masked
    assert error_of(missing)["code"] is None
    assert [r.outcome for r in sandbox.requests()] == ["auth", "auth"]
    assert sandbox.charged_usd() == 0


async def test_trigger_word_is_blocked_by_moderation(in_process: InProcess) -> None:
    async with in_process() as (client, sandbox):
        response = await client.post(
            GEN,
            json={"model": "gpt-image-2", "prompt": "A FORBIDDEN thing"},
            headers=auth(OPENAI_KEY),
        )
    assert response.status_code == 400
    error = error_of(response)
    assert (error["type"], error["code"]) == ("image_generation_user_error", "moderation_blocked")
    assert response.headers["x-request-id"] in str(error["message"])
    assert sandbox.requests()[0].fault == "moderation"


async def test_multipart_edit_with_several_images_and_mask_is_derived_from_the_first(
    in_process: InProcess,
) -> None:
    first = png_bytes(512, 512, (250, 250, 250))
    second = png_bytes(512, 512, (0, 0, 0))
    # Transparent (alpha 0) top half: only that half is edited.
    mask_image = png_bytes(512, 512, (0, 0, 0, 255), mode="RGBA")
    canvas = image_of(mask_image).convert("RGBA")
    canvas.paste((0, 0, 0, 0), (0, 0, 512, 256))
    mask = _encode(canvas)
    files = [
        ("image[]", ("a.png", first, "image/png")),
        ("image[]", ("b.png", second, "image/png")),
        ("mask", ("mask.png", mask, "image/png")),
    ]
    data = {"model": "gpt-image-2", "prompt": "tint the sky", "size": "1024x1024", "quality": "low"}
    async with in_process() as (client, sandbox):
        response = await client.post(EDIT, data=data, files=files, headers=auth(OPENAI_KEY))
    assert response.status_code == 200, response.text
    body = response.json()
    edited = image_of(base64.b64decode(body["data"][0]["b64_json"])).convert("RGB")
    assert edited.size == (1024, 1024)
    top, bottom = rgb_at(edited, 512, 200), rgb_at(edited, 512, 700)
    assert bottom == (250, 250, 250)  # outside the mask: the first source, untouched
    assert top != bottom
    assert min(top) < 245
    assert body["usage"]["input_tokens_details"]["image_tokens"] == 3 * input_image_tokens(512, 512)
    assert sandbox.requests()[0].n_sources == 2


async def test_mask_without_alpha_is_rejected(in_process: InProcess) -> None:
    files = [
        ("image", ("a.png", png_bytes(64, 64, (1, 2, 3)), "image/png")),
        ("mask", ("m.png", png_bytes(64, 64, (0, 0, 0)), "image/png")),
    ]
    async with in_process() as (client, _):
        response = await client.post(
            EDIT,
            data={"model": "gpt-image-2", "prompt": "x"},
            files=files,
            headers=auth(OPENAI_KEY),
        )
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_image_format"


async def test_json_edit_takes_data_urls_and_a_closed_size_enum(in_process: InProcess) -> None:
    source = (
        "data:image/png;base64," + base64.b64encode(png_bytes(300, 200, (10, 200, 10))).decode()
    )
    body = {
        "model": "gpt-image-2",
        "prompt": "x",
        "images": [{"image_url": source}],
        "size": "1536x1024",
    }
    async with in_process() as (client, _):
        ok = await client.post(EDIT, json=body, headers=auth(OPENAI_KEY))
        flexible = await client.post(
            EDIT, json={**body, "size": "1536x864"}, headers=auth(OPENAI_KEY)
        )
    assert image_of(decode_b64(ok.json()["data"][0]["b64_json"])).size == (1536, 1024)
    assert flexible.status_code == 400
    assert error_of(flexible)["param"] == "size"


async def test_responses_image_tool_output_and_usage(in_process: InProcess) -> None:
    source = "data:image/png;base64," + base64.b64encode(png_bytes(64, 64, (200, 0, 0))).decode()
    request = {
        "model": "gpt-5.5",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "make it blue"},
                    {"type": "input_image", "image_url": source},
                ],
            }
        ],
        "tools": [{"type": "image_generation", "size": "1024x1536", "quality": "low"}],
    }
    async with in_process() as (client, sandbox):
        response = await client.post("/openai/v1/responses", json=request, headers=auth(OPENAI_KEY))
    assert response.status_code == 200, response.text
    body = response.json()
    call, message = body["output"]
    assert call["type"] == "image_generation_call"
    assert call["status"] == "completed"
    assert call["id"].startswith("ig_")
    assert call["action"] == "edit"
    assert "make it blue" in call["revised_prompt"]
    assert image_of(base64.b64decode(call["result"])).size == (1024, 1536)
    assert message["type"] == "message"
    assert body["usage"]["total_tokens"] > 0
    image_gen = body["tool_usage"]["image_gen"]
    assert image_gen["output_tokens"] == output_image_tokens(1024, 1536, "low")
    assert image_gen["input_tokens_details"]["image_tokens"] == input_image_tokens(64, 64)
    record = sandbox.requests()[0]
    assert (record.model, record.n_sources) == ("gpt-image-2", 1)


async def test_responses_rejects_an_image_model_as_the_mainline_model(
    in_process: InProcess,
) -> None:
    request = {"model": "gpt-image-2", "input": "x", "tools": [{"type": "image_generation"}]}
    async with in_process() as (client, _):
        response = await client.post("/openai/v1/responses", json=request, headers=auth(OPENAI_KEY))
    assert response.status_code == 400
    assert error_of(response)["param"] == "model"


async def test_unknown_path_is_a_json_404(in_process: InProcess) -> None:
    async with in_process() as (client, _):
        response = await client.post(
            "/openai/v1/chat/completions", json={}, headers=auth(OPENAI_KEY)
        )
    assert response.status_code == 404
    assert (
        json.loads(response.text)["error"]["message"] == "Invalid URL (POST /v1/chat/completions)"
    )


async def test_tiny_mode_answers_64px_whatever_the_size(in_process: InProcess) -> None:
    async with in_process(SandboxConfig(tiny=True)) as (client, _):
        response = await client.post(
            GEN,
            json={"model": "gpt-image-2", "prompt": "x", "size": "3840x2160"},
            headers=auth(OPENAI_KEY),
        )
    body = response.json()
    assert body["size"] == "64x64"
    assert image_of(base64.b64decode(body["data"][0]["b64_json"])).size == (64, 64)


def _encode(image: object) -> bytes:
    import io

    out = io.BytesIO()
    image.save(out, "PNG")  # type: ignore[attr-defined]
    return out.getvalue()


async def test_multipart_edits_know_no_moderation_field(in_process: InProcess) -> None:
    """``moderation`` exists on generations and JSON edits only, not in the multipart schema."""
    files = {"image": ("a.png", png_bytes(64, 64, (1, 2, 3)), "image/png")}
    data = {"model": "gpt-image-2", "prompt": "x", "moderation": "low"}
    async with in_process() as (client, _):
        response = await client.post(EDIT, data=data, files=files, headers=auth(OPENAI_KEY))
    assert response.status_code == 400
    assert (error_of(response)["code"], error_of(response)["param"]) == (
        "unknown_parameter",
        "moderation",
    )


async def test_client_request_id_must_be_short_ascii(in_process: InProcess) -> None:
    async with in_process() as (client, _):
        response = await client.post(
            GEN,
            json={"model": "gpt-image-2", "prompt": "x"},
            headers=auth(OPENAI_KEY, **{"X-Client-Request-Id": "x" * 513}),
        )
    assert response.status_code == 400
