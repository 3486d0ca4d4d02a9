"""The official ``openai`` SDK (httpx2 inside) against a real sandbox server, both profiles."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from runner.sandbox import FaultKind, FaultRule, SandboxConfig, SandboxHandle

from .helpers import DEFAULT_KEY, OFFICIAL_KEY, OPENAI_KEY, decode_b64, image_of, png_bytes, rgb_at

pytestmark = pytest.mark.anyio


@pytest.fixture
async def official(live: SandboxHandle) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        api_key=OPENAI_KEY, base_url=live.openai_base, max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def gateway(live: SandboxHandle) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        api_key=DEFAULT_KEY, base_url=live.laozhang_base, max_retries=0
    ) as client:
        yield client


async def test_sdk_generates_with_usage_and_request_id(
    official: openai.AsyncOpenAI, live: SandboxHandle
) -> None:
    result = await official.images.generate(
        model="gpt-image-2",
        prompt="a paper boat",
        size="1536x1024",
        quality="low",
        output_format="webp",
    )
    assert result.data is not None
    image = image_of(base64.b64decode(result.data[0].b64_json or ""))
    assert (image.format, image.size) == ("WEBP", (1536, 1024))
    assert result.usage is not None
    assert result.usage.output_tokens == 167
    assert result._request_id == live.sandbox.requests()[0].provider_request_id


async def test_sdk_edits_with_a_list_of_images_and_a_mask(
    official: openai.AsyncOpenAI, live: SandboxHandle
) -> None:
    sources = [
        ("a.png", png_bytes(256, 256, (255, 0, 0)), "image/png"),
        ("b.png", png_bytes(256, 256, (0, 255, 0)), "image/png"),
    ]
    mask = ("m.png", png_bytes(256, 256, (0, 0, 0, 0), mode="RGBA"), "image/png")
    result = await official.images.edit(
        model="gpt-image-2", image=sources, mask=mask, prompt="blend", size="1024x1024"
    )
    assert result.data is not None
    edited = image_of(base64.b64decode(result.data[0].b64_json or "")).convert("RGB")
    assert edited.size == (1024, 1024)
    red, green, _ = rgb_at(edited, 512, 400)
    assert red > green  # derived from the first (red) source
    assert live.sandbox.requests()[0].n_sources == 2


async def test_sdk_responses_image_tool(official: openai.AsyncOpenAI) -> None:
    response = await official.responses.create(
        model="gpt-5.5",
        input="Draw a lantern",
        tools=[{"type": "image_generation", "size": "1024x1024", "quality": "low"}],
    )
    calls = [item for item in response.output if item.type == "image_generation_call"]
    assert len(calls) == 1
    assert image_of(base64.b64decode(calls[0].result or "")).size == (1024, 1024)
    assert response.output_text == "Here is the image you asked for."
    assert response.usage is not None
    assert response.usage.total_tokens > 0
    assert response._request_id is not None
    assert response._request_id.startswith("req_")


async def test_sdk_parses_errors_with_status_code_and_request_id(
    official: openai.AsyncOpenAI, live: SandboxHandle
) -> None:
    with pytest.raises(openai.BadRequestError) as blocked:
        await official.images.generate(model="gpt-image-2", prompt="something forbidden")
    assert blocked.value.status_code == 400
    assert blocked.value.code == "moderation_blocked"
    assert blocked.value.type == "image_generation_user_error"
    assert blocked.value.request_id == live.sandbox.requests()[0].provider_request_id

    with pytest.raises(openai.BadRequestError) as unknown:
        await official.images.generate(model="gpt-image-2", prompt="x", response_format="b64_json")
    assert (unknown.value.code, unknown.value.param) == ("unknown_parameter", "response_format")

    async with openai.AsyncOpenAI(
        api_key="sk-invalid", base_url=live.openai_base, max_retries=0
    ) as bad:
        with pytest.raises(openai.AuthenticationError) as auth_error:
            await bad.images.generate(model="gpt-image-2", prompt="x")
    assert auth_error.value.code == "invalid_api_key"


async def test_sdk_sees_rate_limits_server_errors_and_transport_faults(
    official: openai.AsyncOpenAI, live: SandboxHandle
) -> None:
    rules = (
        FaultRule(match="#500#", kind=FaultKind.SERVER_ERROR),
        FaultRule(match="#502#", kind=FaultKind.BAD_GATEWAY),
        FaultRule(match="#RESET#", kind=FaultKind.RESET),
    )
    live.sandbox.reset(SandboxConfig(fault_rules=rules, rpm=60))
    await official.images.generate(model="gpt-image-2", prompt="first")
    with pytest.raises(openai.RateLimitError) as limited:
        await official.images.generate(model="gpt-image-2", prompt="second")
    assert limited.value.response.headers["retry-after"] == "1"
    live.sandbox.configure(rpm=None)
    with pytest.raises(openai.InternalServerError) as server_error:
        await official.images.generate(model="gpt-image-2", prompt="#500#")
    assert server_error.value.status_code == 500
    with pytest.raises(openai.InternalServerError) as bad_gateway:
        await official.images.generate(model="gpt-image-2", prompt="#502#")
    assert bad_gateway.value.status_code == 502  # HTML body: no code, but a clean error
    with pytest.raises(openai.APIConnectionError):
        await official.images.generate(model="gpt-image-2", prompt="#RESET#")


async def test_sdk_on_the_gateway_data_url_b64_and_chat(
    gateway: openai.AsyncOpenAI, live: SandboxHandle
) -> None:
    generated = await gateway.images.generate(model="gpt-image-2", prompt="a mug")
    assert generated.data is not None
    value = generated.data[0].b64_json or ""
    assert value.startswith("data:image/png;base64,")
    assert image_of(decode_b64(value)).size == (1024, 1024)

    linked = await gateway.images.generate(
        model="gpt-image-2", prompt="a mug", response_format="url"
    )
    assert linked.data is not None
    assert linked.data[0].url is not None
    async with httpx.AsyncClient() as client:
        downloaded = await client.get(linked.data[0].url)
    assert image_of(downloaded.content).format == "PNG"

    chat = await gateway.chat.completions.create(
        model="gpt-image-2", messages=[{"role": "user", "content": "a white mug"}]
    )
    content = chat.choices[0].message.content or ""
    assert re.fullmatch(r"!\[image\]\(http://127\.0\.0\.1:\d+/laozhang/files/\S+\.png\)", content)

    with pytest.raises(openai.BadRequestError) as refused:
        await gateway.images.generate(model="gpt-image-2", prompt="x", size="1024x1024")
    request_id = refused.value.response.headers["x-oneapi-request-id"]
    assert refused.value.message.endswith(f"(request id: {request_id})")


async def test_sdk_edit_on_an_official_gateway_group(live: SandboxHandle) -> None:
    async with openai.AsyncOpenAI(
        api_key=OFFICIAL_KEY, base_url=live.laozhang_base, max_retries=0
    ) as client:
        result = await client.images.edit(
            model="gpt-image-2",
            image=("s.png", png_bytes(64, 64, (9, 9, 9)), "image/png"),
            prompt="brighter",
            size="1024x1536",
            quality="low",
        )
    assert result.data is not None
    assert result.usage is not None
    assert image_of(decode_b64(result.data[0].b64_json or "")).size == (1024, 1536)
    assert live.sandbox.requests()[0].group == "Sora2Official"


async def test_chat_fetches_an_image_url_from_another_loopback_server(live: SandboxHandle) -> None:
    """The gateway downloads ``image_url`` sources: here from a second sandbox's file link."""
    from runner.sandbox import running_sandbox

    with running_sandbox() as other:
        async with httpx.AsyncClient(base_url=other.laozhang_base) as client:
            made = await client.post(
                "/images/generations",
                json={"model": "gpt-image-2", "prompt": "source", "response_format": "url"},
                headers={"Authorization": f"Bearer {DEFAULT_KEY}"},
            )
        source_url = made.json()["data"][0]["url"]
        async with openai.AsyncOpenAI(
            api_key=DEFAULT_KEY, base_url=live.laozhang_base, max_retries=0
        ) as gw:
            chat = await gw.chat.completions.create(
                model="gpt-image-2",
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "frame it"},
                            {"type": "image_url", "image_url": {"url": source_url}},
                        ],
                    }
                ],
            )
    assert "![image](" in (chat.choices[0].message.content or "")
    assert [r.n_sources for r in live.sandbox.requests()] == [1]
    assert [r.status for r in other.sandbox.requests("file")] == [200]
