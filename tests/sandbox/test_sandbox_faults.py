"""Every fault knob: in-process where bytes tell the story, a real server for transport faults."""

from __future__ import annotations

import binascii
import functools

import anyio
import httpx
import pytest

from runner.models import Outcome
from runner.sandbox import FaultKind, FaultRule, Latency, SandboxConfig, SandboxHandle
from runner.sandbox.config import Profile
from runner.sandbox.generation import latency_s

from .helpers import DEFAULT_KEY, OPENAI_KEY, InProcess, auth, decode_b64

pytestmark = pytest.mark.anyio

GEN = "/openai/v1/images/generations"
GW_GEN = "/laozhang/v1/images/generations"


def rule(kind: FaultKind, times: int | None = None, profile: Profile | None = None) -> FaultRule:
    return FaultRule(match=f"#{kind.value}#", kind=kind, times=times, profile=profile)


def body(prompt: str, model: str = "gpt-image-2") -> dict[str, object]:
    return {"model": model, "prompt": prompt}


@pytest.mark.parametrize(
    ("kind", "status", "error_type"),
    [
        (FaultKind.SERVER_ERROR, 500, "server_error"),
        (FaultKind.UNAVAILABLE, 503, "service_unavailable_error"),
        (FaultKind.MODERATION, 400, "image_generation_user_error"),
        (FaultKind.AUTH, 401, "invalid_request_error"),
        (FaultKind.QUOTA, 429, "insufficient_quota"),
        (FaultKind.RATE_LIMIT, 429, "requests"),
    ],
)
async def test_json_error_faults(
    in_process: InProcess, kind: FaultKind, status: int, error_type: str
) -> None:
    config = SandboxConfig(fault_rules=(rule(kind),))
    async with in_process(config) as (client, sandbox):
        response = await client.post(GEN, json=body(f"#{kind.value}# x"), headers=auth(OPENAI_KEY))
    assert response.status_code == status
    assert response.json()["error"]["type"] == error_type
    if kind is FaultKind.RATE_LIMIT:
        assert response.headers["retry-after"] == "1"
        assert response.headers["retry-after-ms"] == "1000"
    [record] = sandbox.requests()
    assert (record.fault, record.status) == (kind, status)


async def test_bad_gateway_has_an_html_body(in_process: InProcess) -> None:
    config = SandboxConfig(fault_rules=(rule(FaultKind.BAD_GATEWAY),))
    async with in_process(config) as (client, _):
        response = await client.post(GW_GEN, json=body("#bad_gateway#"), headers=auth(DEFAULT_KEY))
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/html")
    assert "<h1>502 Bad Gateway</h1>" in response.text
    assert "x-oneapi-request-id" in response.headers
    with pytest.raises(ValueError, match="Expecting value"):
        response.json()


@pytest.mark.parametrize(("path", "key"), [(GEN, OPENAI_KEY), (GW_GEN, DEFAULT_KEY)])
async def test_corrupt_b64_does_not_decode_even_after_repadding(
    in_process: InProcess, path: str, key: str
) -> None:
    config = SandboxConfig(fault_rules=(rule(FaultKind.CORRUPT_B64),))
    async with in_process(config) as (client, sandbox):
        response = await client.post(path, json=body("#corrupt_b64#"), headers=auth(key))
    assert response.status_code == 200
    with pytest.raises(binascii.Error):
        decode_b64(response.json()["data"][0]["b64_json"])
    assert sandbox.requests()[0].outcome == "bad_response"


async def test_empty_data_is_a_200_without_images(in_process: InProcess) -> None:
    config = SandboxConfig(fault_rules=(rule(FaultKind.EMPTY_DATA),))
    chat = {"model": "gpt-image-2", "messages": [{"role": "user", "content": "#empty_data#"}]}
    async with in_process(config) as (client, _):
        images = await client.post(GEN, json=body("#empty_data#"), headers=auth(OPENAI_KEY))
        answer = await client.post(
            "/laozhang/v1/chat/completions", json=chat, headers=auth(DEFAULT_KEY)
        )
    assert images.status_code == answer.status_code == 200
    assert images.json()["data"] == []
    assert "![" not in answer.json()["choices"][0]["message"]["content"]


async def test_scripted_rule_fires_for_the_first_k_matches_only(in_process: InProcess) -> None:
    config = SandboxConfig(fault_rules=(rule(FaultKind.SERVER_ERROR, times=2),))
    async with in_process(config) as (client, sandbox):
        statuses = [
            (
                await client.post(GEN, json=body("#server_error# again"), headers=auth(OPENAI_KEY))
            ).status_code
            for _ in range(4)
        ]
    assert statuses == [500, 500, 200, 200]
    assert sandbox.snapshot()["fault_rule_uses"] == [2]


async def test_rules_can_target_one_profile(in_process: InProcess) -> None:
    config = SandboxConfig(fault_rules=(rule(FaultKind.SERVER_ERROR, profile=Profile.LAOZHANG),))
    async with in_process(config) as (client, _):
        official = await client.post(GEN, json=body("#server_error#"), headers=auth(OPENAI_KEY))
        gateway = await client.post(GW_GEN, json=body("#server_error#"), headers=auth(DEFAULT_KEY))
    assert (official.status_code, gateway.status_code) == (200, 500)


async def test_fault_rates_are_seeded_and_roughly_right(in_process: InProcess) -> None:
    config = SandboxConfig(
        fault_rates={FaultKind.SERVER_ERROR: 0.3, FaultKind.EMPTY_DATA: 0.2}, seed=7, tiny=True
    )

    async def run() -> list[FaultKind | None]:
        async with in_process(config) as (client, sandbox):
            for i in range(60):
                await client.post(GEN, json=body(f"p{i}"), headers=auth(OPENAI_KEY))
            return [r.fault for r in sandbox.requests()]

    first, second = await run(), await run()
    assert first == second
    assert 8 <= first.count(FaultKind.SERVER_ERROR) <= 30
    assert 4 <= first.count(FaultKind.EMPTY_DATA) <= 22
    other_seed = SandboxConfig(fault_rates=config.fault_rates, seed=8, tiny=True)
    async with in_process(other_seed) as (client, sandbox):
        for i in range(60):
            await client.post(GEN, json=body(f"p{i}"), headers=auth(OPENAI_KEY))
        assert [r.fault for r in sandbox.requests()] != first


async def test_a_hang_the_client_sits_through_ends_in_504(in_process: InProcess) -> None:
    config = SandboxConfig(fault_rules=(rule(FaultKind.HANG),), hang_seconds=0.05)
    async with in_process(config) as (client, sandbox):
        with anyio.fail_after(5):
            response = await client.post(GEN, json=body("#hang#"), headers=auth(OPENAI_KEY))
    assert response.status_code == 504
    assert sandbox.requests()[0].outcome == "timeout"


async def test_latency_delays_the_answer(in_process: InProcess) -> None:
    config = SandboxConfig(latency=Latency(mean=0.1), tiny=True)
    async with in_process(config) as (client, _):
        started = anyio.current_time()
        await client.post(GEN, json=body("slow"), headers=auth(OPENAI_KEY))
        assert anyio.current_time() - started >= 0.1


@pytest.mark.parametrize("distribution", ["uniform", "normal"])
def test_latency_draws_are_seeded_per_request(distribution: str) -> None:
    config = SandboxConfig(latency=Latency(mean=1.0, jitter=0.5, distribution=distribution), seed=3)  # type: ignore[arg-type]
    draws = [latency_s(config, seq) for seq in range(1, 200)]
    assert draws == [latency_s(config, seq) for seq in range(1, 200)]
    assert all(d >= 0 for d in draws)
    assert 0.85 < sum(draws) / len(draws) < 1.15
    if distribution == "uniform":
        assert all(0.5 <= d <= 1.5 for d in draws)


# ---------------------------------------------------------------- real server: transport faults


async def wait_for_records(handle: SandboxHandle, count: int) -> None:
    """Poll the live request log until ``count`` image requests have settled."""
    with anyio.fail_after(5):
        while len(handle.sandbox.requests()) < count:
            await anyio.sleep(0.01)


async def test_reset_is_a_transport_error_not_a_status(live: SandboxHandle) -> None:
    live.sandbox.configure(fault_rules=(rule(FaultKind.RESET, times=1),))
    async with httpx.AsyncClient(base_url=live.openai_base, timeout=5) as client:
        with pytest.raises(httpx.TransportError):
            await client.post("/images/generations", json=body("#reset#"), headers=auth(OPENAI_KEY))
        after = await client.post(
            "/images/generations", json=body("#reset#"), headers=auth(OPENAI_KEY)
        )
    assert after.status_code == 200
    first = live.sandbox.requests()[0]
    assert (first.status, first.outcome) == (None, "network")


async def test_truncated_body_breaks_off_before_content_length(live: SandboxHandle) -> None:
    live.sandbox.configure(fault_rules=(rule(FaultKind.TRUNCATE),))
    async with httpx.AsyncClient(base_url=live.laozhang_base, timeout=5) as client:
        with pytest.raises(httpx.RemoteProtocolError, match=r"complete message body"):
            await client.post(
                "/images/generations", json=body("#truncate#"), headers=auth(DEFAULT_KEY)
            )
    record = live.sandbox.requests()[0]
    assert (record.status, record.outcome) == (200, "bad_response")


@pytest.mark.parametrize(
    ("policy", "charged"), [(frozenset(), 0.0), (frozenset({Outcome.TIMEOUT}), 0.03)]
)
async def test_client_timeout_during_a_hang_is_charged_per_policy(
    live: SandboxHandle, policy: frozenset[Outcome], charged: float
) -> None:
    config = SandboxConfig(
        fault_rules=(rule(FaultKind.HANG),), hang_seconds=30, charged_failures=policy
    )
    live.sandbox.reset(config)
    async with httpx.AsyncClient(base_url=live.laozhang_base, timeout=0.3) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/images/generations", json=body("#hang#"), headers=auth(DEFAULT_KEY))
    await wait_for_records(live, 1)  # the sandbox noticed the disconnect long before 30 s
    record = live.sandbox.requests()[0]
    assert (record.status, record.outcome, record.charged_usd) == (499, "timeout", charged)
    assert live.sandbox.balance_usd(DEFAULT_KEY) == pytest.approx(100 - charged)


async def test_client_leaving_during_latency_counts_as_timeout(live: SandboxHandle) -> None:
    live.sandbox.configure(latency=Latency(mean=20.0))
    async with httpx.AsyncClient(base_url=live.openai_base, timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/images/generations", json=body("slow"), headers=auth(OPENAI_KEY))
    await wait_for_records(live, 1)
    assert live.sandbox.requests()[0].outcome == "timeout"


async def test_reset_in_process_raises_out_of_the_app(in_process: InProcess) -> None:
    """No socket to reset under ASGITransport: the app raises ConnectionResetError instead."""
    config = SandboxConfig(fault_rules=(rule(FaultKind.RESET),))
    async with in_process(config) as (client, sandbox):
        with pytest.raises(ConnectionResetError):
            await client.post(GEN, json=body("#reset#"), headers=auth(OPENAI_KEY))
    assert sandbox.requests()[0].outcome == "network"


async def test_a_client_cancelled_in_process_settles_as_a_charged_timeout(
    in_process: InProcess,
) -> None:
    config = SandboxConfig(fault_rules=(rule(FaultKind.HANG),), hang_seconds=30)
    async with in_process(config) as (client, sandbox):
        with anyio.move_on_after(0.1) as scope:
            await client.post(GW_GEN, json=body("#hang#"), headers=auth(DEFAULT_KEY))
    assert scope.cancelled_caught
    [record] = sandbox.requests()
    assert (record.status, record.outcome, record.charged_usd) == (499, "timeout", 0.03)


async def test_a_request_from_before_a_reset_is_not_recorded_or_charged(
    in_process: InProcess,
) -> None:
    config = SandboxConfig(fault_rules=(rule(FaultKind.HANG),), hang_seconds=30)
    async with in_process(config) as (client, sandbox), anyio.create_task_group() as group:
        hang = functools.partial(
            client.post, GW_GEN, json=body("#hang#"), headers=auth(DEFAULT_KEY)
        )
        group.start_soon(hang)
        with anyio.fail_after(5):
            while sandbox.inflight() == 0:
                await anyio.sleep(0.005)
        sandbox.reset()
        group.cancel_scope.cancel()
    assert sandbox.requests() == []
    assert sandbox.charged_usd() == 0
