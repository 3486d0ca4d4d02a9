"""The gateway profile (/laozhang/v1) in-process: group rules, data-URL b64, links, balances."""

from __future__ import annotations

import base64
import binascii
import re

import pytest

from runner.routes.sizes import VIP_SIZES
from runner.sandbox import SandboxConfig
from runner.sandbox.prices import QUOTA_PER_USD
from runner.sandbox.tokens import output_image_tokens, text_tokens

from .helpers import (
    DEFAULT_KEY,
    ENTERPRISE_KEY,
    OFFICIAL_KEY,
    FakeClock,
    InProcess,
    auth,
    decode_b64,
    image_of,
    png_bytes,
    rgb_at,
)

pytestmark = pytest.mark.anyio

GEN = "/laozhang/v1/images/generations"
EDIT = "/laozhang/v1/images/edits"
CHAT = "/laozhang/v1/chat/completions"
#: new-api: UTC yyyyMMddHHmmss + 9-digit nanoseconds + 8-hex build hash + 8 random characters.
ONEAPI_ID = re.compile(r"\d{14}\d{9}[0-9a-f]{8}[A-Za-z0-9]{8}")


async def test_default_group_b64_is_an_unpadded_data_url(in_process: InProcess) -> None:
    async with in_process() as (client, sandbox):
        response = await client.post(
            GEN, json={"model": "gpt-image-2", "prompt": "a mug"}, headers=auth(DEFAULT_KEY)
        )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"created", "data"}  # the web route's bare shape: no usage
    value = body["data"][0]["b64_json"]
    assert value.startswith("data:image/png;base64,")
    assert not value.endswith("=")
    payload = value.split(",", 1)[1]
    if len(payload) % 4:  # a naive decoder fails on the missing padding…
        with pytest.raises(binascii.Error):
            base64.b64decode(payload, validate=True)
    image = image_of(decode_b64(value))  # …a careful one re-pads and gets the image
    assert (image.format, image.size) == ("PNG", (1024, 1024))
    request_id = response.headers["x-oneapi-request-id"]
    assert ONEAPI_ID.fullmatch(request_id)
    assert "x-request-id" not in response.headers
    [record] = sandbox.requests()
    assert (record.group, record.charged_usd, record.provider_request_id) == (
        "default",
        0.03,
        request_id,
    )


@pytest.mark.parametrize(
    ("model", "extra", "param"),
    [
        ("gpt-image-2", {"size": "1024x1024"}, "size"),
        ("gpt-image-2", {"quality": "high"}, "quality"),
        ("gpt-image-2-vip", {"size": "2048x2048", "quality": "low"}, "quality"),
    ],
)
async def test_default_group_refuses_parameters_its_routes_do_not_take(
    in_process: InProcess, model: str, extra: dict[str, str], param: str
) -> None:
    async with in_process() as (client, sandbox):
        response = await client.post(
            GEN, json={"model": model, "prompt": "x", **extra}, headers=auth(DEFAULT_KEY)
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "unsupported_parameter",
        param,
    )
    assert error["message"].endswith(f"(request id: {response.headers['x-oneapi-request-id']})")
    assert sandbox.charged_usd() == 0


async def test_vip_takes_exactly_the_30_sizes(in_process: InProcess) -> None:
    assert len(VIP_SIZES) == 30
    async with in_process(SandboxConfig(tiny=False)) as (client, _):
        ok = await client.post(
            GEN,
            json={"model": "gpt-image-2-vip", "prompt": "x", "size": "1280x544"},
            headers=auth(DEFAULT_KEY),
        )
        square = await client.post(
            GEN,
            json={"model": "gpt-image-2-vip", "prompt": "x", "size": "1024x1024"},
            headers=auth(DEFAULT_KEY),
        )
        auto = await client.post(
            GEN,
            json={"model": "gpt-image-2-vip", "prompt": "x", "size": "auto"},
            headers=auth(DEFAULT_KEY),
        )
    assert image_of(decode_b64(ok.json()["data"][0]["b64_json"])).size == (1280, 544)
    assert square.status_code == auto.status_code == 400
    assert square.json()["error"]["param"] == "size"


async def test_unknown_model_in_group_is_503_no_channel(in_process: InProcess) -> None:
    async with in_process() as (client, _):
        response = await client.post(
            GEN, json={"model": "gpt-image-1", "prompt": "x"}, headers=auth(DEFAULT_KEY)
        )
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "model_not_found"
    assert "under group default" in error["message"]


async def test_invalid_key_is_401_invalid_token_with_request_id(in_process: InProcess) -> None:
    async with in_process() as (client, _):
        response = await client.post(
            GEN, json={"model": "gpt-image-2", "prompt": "x"}, headers=auth("sk-invalid-1")
        )
    assert response.status_code == 401
    error = response.json()["error"]
    request_id = response.headers["x-oneapi-request-id"]
    assert error["message"] == f"Invalid token (request id: {request_id})"
    assert (error["param"], error["code"]) == ("", "")


async def test_url_results_download_then_expire(
    in_process: InProcess, fake_clock: FakeClock
) -> None:
    config = SandboxConfig(file_ttl=60)
    async with in_process(config, clock=fake_clock) as (client, sandbox):
        response = await client.post(
            GEN,
            json={"model": "gpt-image-2", "prompt": "x", "response_format": "url"},
            headers=auth(DEFAULT_KEY),
        )
        url = response.json()["data"][0]["url"]
        assert url.startswith("http://sandbox.test/laozhang/files/")
        fresh = await client.get(url)
        fake_clock.advance(61)
        expired = await client.get(url)
    assert fresh.status_code == 200
    assert fresh.headers["content-type"] == "image/png"
    assert image_of(fresh.content).size == (1024, 1024)
    assert expired.status_code == 404
    assert [r.status for r in sandbox.requests("file")] == [200, 404]


async def test_chat_answers_with_a_markdown_link(in_process: InProcess) -> None:
    request = {
        "model": "gpt-image-2",
        "messages": [{"role": "user", "content": "a white mug"}],
        "stream": False,
    }
    async with in_process() as (client, sandbox):
        response = await client.post(CHAT, json=request, headers=auth(DEFAULT_KEY))
        content = response.json()["choices"][0]["message"]["content"]
        match = re.fullmatch(r"!\[image\]\((https?://[^)\s]+)\)", content)
        assert match is not None
        image = await client.get(match.group(1))
    assert image_of(image.content).size == (1024, 1024)
    assert sandbox.requests()[0].charged_usd == 0.03


async def test_chat_edit_from_a_data_url_and_from_an_earlier_link(in_process: InProcess) -> None:
    source = (
        "data:image/png;base64," + base64.b64encode(png_bytes(100, 100, (255, 255, 255))).decode()
    )

    def request(url: str) -> dict[str, object]:
        parts = [
            {"type": "text", "text": "add a red border"},
            {"type": "image_url", "image_url": {"url": url}},
        ]
        return {"model": "gpt-image-2", "messages": [{"role": "user", "content": parts}]}

    async with in_process() as (client, sandbox):
        first = await client.post(CHAT, json=request(source), headers=auth(DEFAULT_KEY))
        link = re.findall(r"\((.+)\)", first.json()["choices"][0]["message"]["content"])[0]
        second = await client.post(CHAT, json=request(link), headers=auth(DEFAULT_KEY))
        gone = await client.post(
            CHAT, json=request(link.replace("img_", "img_x")), headers=auth(DEFAULT_KEY)
        )
    assert first.status_code == second.status_code == 200
    assert [r.n_sources for r in sandbox.requests()] == [1, 1, 1]
    assert gone.status_code == 400
    assert gone.json()["error"]["code"] == "failed_to_download_image"


async def test_multipart_edit_with_a_single_image_field(in_process: InProcess) -> None:
    files = {"image": ("source.png", png_bytes(200, 100, (0, 0, 255)), "image/png")}
    async with in_process() as (client, _):
        response = await client.post(
            EDIT,
            data={"model": "gpt-image-2", "prompt": "keep it"},
            files=files,
            headers=auth(DEFAULT_KEY),
        )
    assert response.status_code == 200, response.text
    edited = image_of(decode_b64(response.json()["data"][0]["b64_json"])).convert("RGB")
    assert edited.size == (1024, 1024)
    r, g, b = rgb_at(edited, 512, 400)
    assert b > r
    assert b > g


async def test_official_groups_bill_tokens_and_enterprise_adds_20_percent(
    in_process: InProcess,
) -> None:
    request = {"model": "gpt-image-2", "prompt": "a chart", "size": "1024x1024", "quality": "high"}
    async with in_process() as (client, sandbox):
        official = await client.post(GEN, json=request, headers=auth(OFFICIAL_KEY))
        enterprise = await client.post(GEN, json=request, headers=auth(ENTERPRISE_KEY))
    for response in (official, enterprise):
        assert response.status_code == 200
        assert response.json()["usage"]["output_tokens"] == 7033
        assert response.headers["x-request-id"].startswith("req_")  # relayed upstream header
    tokens = text_tokens("a chart") * 5.0 + output_image_tokens(1024, 1024, "high") * 30.0
    base_quota = round(tokens / 1e6 * QUOTA_PER_USD)
    charged = [r.charged_quota for r in sandbox.requests()]
    assert charged == [base_quota, round(base_quota * 1.2)]
    assert [r.group for r in sandbox.requests()] == ["Sora2Official", "GPTImage2 Enterprise"]


@pytest.mark.parametrize("status", [403, 429])
async def test_insufficient_balance_is_insufficient_user_quota(
    in_process: InProcess, status: int
) -> None:
    config = SandboxConfig(key_balances={DEFAULT_KEY: 0.05}, quota_status=status)
    async with in_process(config) as (client, sandbox):
        first = await client.post(
            GEN, json={"model": "gpt-image-2", "prompt": "x"}, headers=auth(DEFAULT_KEY)
        )
        refused = await client.post(
            GEN, json={"model": "gpt-image-2", "prompt": "x"}, headers=auth(DEFAULT_KEY)
        )
    assert first.status_code == 200
    assert refused.status_code == status
    assert refused.json()["error"]["code"] == "insufficient_user_quota"
    assert sandbox.balance_usd(DEFAULT_KEY) == pytest.approx(0.02)
    assert [r.outcome for r in sandbox.requests()] == ["ok", "quota_exhausted"]


async def test_balance_and_log_endpoints_in_new_api_units(in_process: InProcess) -> None:
    config = SandboxConfig(balance_usd=10)
    async with in_process(config) as (client, _):
        made = await client.post(
            GEN,
            json={"model": "gpt-image-2", "prompt": "x", "n": 2},
            headers=auth(DEFAULT_KEY, **{"X-Client-Request-Id": "cid-7"}),
        )
        usage = (await client.get("/laozhang/api/usage/token", headers=auth(DEFAULT_KEY))).json()
        logs = (await client.get("/laozhang/api/log/token", headers=auth(DEFAULT_KEY))).json()
        sub = (
            await client.get(
                "/laozhang/v1/dashboard/billing/subscription", headers=auth(DEFAULT_KEY)
            )
        ).json()
        used = (
            await client.get("/laozhang/v1/dashboard/billing/usage", headers=auth(DEFAULT_KEY))
        ).json()
        refused = await client.get("/laozhang/api/log/token", headers=auth("sk-invalid"))
    assert len(made.json()["data"]) == 1  # the web route returns one image whatever n says…
    data = usage["data"]
    assert (usage["code"], data["total_granted"], data["total_used"]) == (
        True,
        5_000_000,
        30_000,
    )  # …and bills n
    assert data["total_available"] == 4_970_000
    [row] = logs["data"]
    assert (row["type"], row["quota"], row["model_name"], row["group"]) == (
        2,
        30_000,
        "gpt-image-2",
        "default",
    )
    assert row["request_id"] == made.headers["x-oneapi-request-id"]
    assert '"client_request_id":"cid-7"' in row["other"]
    assert sub["hard_limit_usd"] == 10.0
    assert used["total_usage"] == pytest.approx(6.0)  # cents
    assert refused.status_code == 401
    assert refused.json() == {"success": False, "message": "Invalid token"}
