"""Rate limits enforced as providers do: a minute's quota quantized into a small bucket."""

from __future__ import annotations

import anyio
import httpx
import pytest

from runner.sandbox import SandboxConfig, SandboxHandle
from runner.sandbox.ratelimit import RateLimiter, TokenBucket, go_duration

from .helpers import DEFAULT_KEY, OPENAI_KEY, FakeClock, InProcess, auth

pytestmark = pytest.mark.anyio

GEN = "/openai/v1/images/generations"
BODY = {"model": "gpt-image-2", "prompt": "x"}


@pytest.mark.parametrize(("rpm", "capacity"), [(1, 1), (60, 1), (61, 2), (120, 2), (600, 10)])
def test_bucket_capacity_is_a_second_of_the_limit(rpm: int, capacity: int) -> None:
    assert TokenBucket(rpm, now=0.0).capacity == capacity


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.017, "17ms"), (1.0, "1s"), (1.5, "1.5s"), (360, "6m0s"), (0, "0s")]
)
def test_reset_headers_use_go_durations(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_the_image_limit_refuses_with_its_own_wait() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=600, ipm=60, clock=clock)  # 10 requests, but 1 image, per second
    first = limiter.admit("k", images=1)
    refused = limiter.admit("k", images=1)
    assert first is not None
    assert first.allowed
    assert refused is not None
    assert not refused.allowed
    assert refused.metric == "images"
    assert refused.retry_after_s == pytest.approx(1.0)
    clock.advance(1.0)
    again = limiter.admit("k", images=1)
    assert again is not None
    assert again.allowed
    assert (again.metric, again.limit) == ("requests", 600)


async def test_a_burst_is_refused_with_retry_after(
    in_process: InProcess, fake_clock: FakeClock
) -> None:
    async with in_process(SandboxConfig(rpm=120, tiny=True), clock=fake_clock) as (client, sandbox):
        responses = [await client.post(GEN, json=BODY, headers=auth(OPENAI_KEY)) for _ in range(5)]
    assert [r.status_code for r in responses] == [200, 200, 429, 429, 429]
    ok, refused = responses[0], responses[2]
    assert ok.headers["x-ratelimit-limit-requests"] == "120"
    assert ok.headers["x-ratelimit-remaining-requests"] == "119"
    assert ok.headers["x-ratelimit-reset-requests"] == "500ms"
    assert refused.headers["retry-after"] == "1"  # integer seconds, at least 1
    assert refused.headers["retry-after-ms"] == "500"
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
    assert [r.outcome for r in sandbox.requests()][2:] == ["rate_limited"] * 3


async def test_pacing_at_the_rate_is_never_refused(
    in_process: InProcess, fake_clock: FakeClock
) -> None:
    async with in_process(SandboxConfig(rpm=120, tiny=True), clock=fake_clock) as (client, _):
        statuses = []
        for _ in range(20):
            statuses.append(
                (await client.post(GEN, json=BODY, headers=auth(OPENAI_KEY))).status_code
            )
            fake_clock.advance(0.5)
    assert statuses == [200] * 20


async def test_keys_have_separate_buckets_and_gateway_has_no_retry_after_ms(
    in_process: InProcess, fake_clock: FakeClock
) -> None:
    gw = "/laozhang/v1/images/generations"
    async with in_process(SandboxConfig(rpm=60, tiny=True), clock=fake_clock) as (client, _):
        a = await client.post(gw, json=BODY, headers=auth(DEFAULT_KEY))
        b = await client.post(gw, json=BODY, headers=auth("sk-default-other"))
        refused = await client.post(gw, json=BODY, headers=auth(DEFAULT_KEY))
    assert (a.status_code, b.status_code, refused.status_code) == (200, 200, 429)
    assert refused.headers["retry-after"] == "1"
    assert "retry-after-ms" not in refused.headers
    assert refused.json()["error"]["message"].endswith(")")  # "(request id: …)"


async def test_images_per_minute_counts_n(in_process: InProcess, fake_clock: FakeClock) -> None:
    async with in_process(SandboxConfig(ipm=120, tiny=True), clock=fake_clock) as (client, _):
        two = await client.post(GEN, json={**BODY, "n": 2}, headers=auth(OPENAI_KEY))
        one_more = await client.post(GEN, json=BODY, headers=auth(OPENAI_KEY))
    assert (two.status_code, one_more.status_code) == (200, 429)
    assert "images per min" in one_more.json()["error"]["message"]


@pytest.mark.serial  # wall-clock pacing against the real server
async def test_real_server_burst_then_paced(live: SandboxHandle) -> None:
    live.sandbox.configure(rpm=1200, tiny=True)  # a bucket of 20, refilled at 20 per second
    async with httpx.AsyncClient(base_url=live.openai_base, timeout=5) as client:
        statuses: list[int] = []

        async def send() -> None:
            response = await client.post("/images/generations", json=BODY, headers=auth(OPENAI_KEY))
            statuses.append(response.status_code)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                for _ in range(40):
                    group.start_soon(send)
        # The bucket's 20, plus what refilled while the burst was in flight.
        assert 20 <= statuses.count(200) <= 30
        assert statuses.count(429) >= 10

        paced: list[int] = []
        await anyio.sleep(1.0)  # wait for the bucket to refill: this is pacing, not settling
        with anyio.fail_after(10):
            for _ in range(12):
                response = await client.post(
                    "/images/generations", json=BODY, headers=auth(OPENAI_KEY)
                )
                paced.append(response.status_code)
                await anyio.sleep(0.06)  # a little slower than 20 per second
    assert paced == [200] * 12
