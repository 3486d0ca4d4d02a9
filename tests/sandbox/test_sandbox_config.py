"""Knobs: the config record, its JSON form, CLI option parsing and the admin API."""

from __future__ import annotations

import httpx
import pytest

from runner.models import Outcome
from runner.sandbox import (
    FaultKind,
    FaultRule,
    Latency,
    SandboxConfig,
    SandboxHandle,
    config_from_json,
    config_from_options,
    config_to_json,
)
from runner.sandbox.config import Profile
from runner.sandbox.options import parse_fault_rule, parse_policy

from .helpers import OPENAI_KEY, InProcess, auth

pytestmark = pytest.mark.anyio


def test_json_round_trip_keeps_every_knob() -> None:
    config = SandboxConfig(
        latency=Latency(mean=0.5, jitter=0.1, distribution="normal"),
        rpm=60,
        ipm=5,
        fault_rates={FaultKind.SERVER_ERROR: 0.1},
        fault_rules=(
            FaultRule(match="#X#", kind=FaultKind.RESET, times=2, profile=Profile.OPENAI),
        ),
        charged_failures=frozenset({Outcome.TIMEOUT}),
        moderation_word=None,
        hang_seconds=5,
        seed=42,
        tiny=True,
        balance_usd=3,
        key_balances={"sk-a": 1.5},
        quota_status=429,
        file_ttl=10,
        fetch_timeout=2,
    )
    assert config_from_json(config_to_json(config)) == config


def test_json_patch_changes_only_what_it_names() -> None:
    base = SandboxConfig(rpm=60, seed=3)
    patched = config_from_json({"latency": [0.2, 0.05], "charged_failures": "all"}, base)
    assert (patched.rpm, patched.seed) == (60, 3)
    assert patched.latency == Latency(mean=0.2, jitter=0.05)
    assert Outcome.RATE_LIMITED in patched.charged_failures


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"rmp": 5}, "unknown sandbox setting"),
        ({"rpm": 0}, "rpm must be >= 1"),
        ({"fault_rates": {"server_error": 0.7, "reset": 0.6}}, "add up to at most 1"),
        ({"fault_rates": {"explode": 0.1}}, "unknown fault"),
        ({"charged_failures": ["auth"]}, "cannot be charged"),
        ({"latency": "slow"}, "latency"),
    ],
)
def test_invalid_settings_are_refused_with_a_reason(patch: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config_from_json(patch)


def test_cli_options_build_a_config() -> None:
    config = config_from_options(
        latency=1.0,
        jitter=0.25,
        rpm=120,
        faults="server_error=0.05, hang=0.01",
        rules=["#RESET#:reset:2", "a:b:unavailable", "#X#:moderation@laozhang"],
        policy="none",
        seed=9,
        tiny=True,
        moderation_word="",
    )
    assert config.latency == Latency(mean=1.0, jitter=0.25)
    assert config.fault_rates == {FaultKind.SERVER_ERROR: 0.05, FaultKind.HANG: 0.01}
    assert config.fault_rules == (
        FaultRule(match="#RESET#", kind=FaultKind.RESET, times=2),
        FaultRule(match="a:b", kind=FaultKind.UNAVAILABLE),
        FaultRule(match="#X#", kind=FaultKind.MODERATION, profile=Profile.LAOZHANG),
    )
    assert config.charged_failures == frozenset()
    assert config.moderation_word is None
    assert (config.rpm, config.ipm, config.seed, config.tiny) == (120, None, 9, True)


def test_policy_presets_and_lists() -> None:
    assert parse_policy("new-api") == {Outcome.TIMEOUT, Outcome.BAD_RESPONSE}
    assert parse_policy("timeout, rate_limited") == {Outcome.TIMEOUT, Outcome.RATE_LIMITED}
    assert parse_policy(["server_error"]) == {Outcome.SERVER_ERROR}
    with pytest.raises(ValueError, match="unknown outcome"):
        parse_policy("sometimes")
    with pytest.raises(ValueError, match="MARKER:KIND"):
        parse_fault_rule(":reset")


async def test_admin_api_reads_patches_and_resets(live: SandboxHandle) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=5) as client:
        await client.post(
            "/openai/v1/images/generations",
            json={"model": "gpt-image-2", "prompt": "x"},
            headers=auth(OPENAI_KEY),
        )
        await client.get("/openai/api/usage/token", headers=auth(OPENAI_KEY))
        images = (await client.get("/_sandbox/requests")).json()["data"]
        everything = (await client.get("/_sandbox/requests", params={"kind": "all"})).json()["data"]
        state = (await client.get("/_sandbox/state")).json()
        patched = await client.post(
            "/_sandbox/config", json={"rpm": 600, "fault_rates": {"reset": 0.5}}
        )
        refused = await client.post("/_sandbox/config", json={"rpm": -1})
        reset = (await client.post("/_sandbox/reset")).json()
    assert [r["kind"] for r in images] == ["image"]
    assert [r["kind"] for r in everything] == ["image", "account"]
    assert images[0]["prompt"] == "x"
    assert "sk-sandbox-openai" not in str(everything)  # keys are never logged
    assert state["requests"] == 1
    assert state["charged_usd"] == pytest.approx(images[0]["charged_usd"])
    assert patched.json()["rpm"] == 600
    assert live.sandbox.config.fault_rates == {FaultKind.RESET: 0.5}
    assert refused.status_code == 400
    assert reset["requests"] == 0
    assert reset["accounts"] == []


async def test_configure_at_runtime_takes_effect_on_the_next_request(in_process: InProcess) -> None:
    async with in_process() as (client, sandbox):
        before = await client.post(
            "/openai/v1/images/generations",
            json={"model": "gpt-image-2", "prompt": "x"},
            headers=auth(OPENAI_KEY),
        )
        sandbox.configure(fault_rules=(FaultRule(match="x", kind=FaultKind.UNAVAILABLE),))
        after = await client.post(
            "/openai/v1/images/generations",
            json={"model": "gpt-image-2", "prompt": "x"},
            headers=auth(OPENAI_KEY),
        )
    assert (before.status_code, after.status_code) == (200, 503)
