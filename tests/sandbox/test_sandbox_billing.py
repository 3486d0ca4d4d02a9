"""The hidden failure-charge policy, seen the only way a client can: balances and call logs."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import httpx
import pytest

from runner.models import Outcome
from runner.sandbox import FaultKind, FaultRule, RequestRecord, SandboxConfig
from runner.sandbox.options import parse_policy
from runner.sandbox.tokens import text_tokens

from .helpers import DEFAULT_KEY, OPENAI_KEY, FakeClock, InProcess, auth

pytestmark = pytest.mark.anyio

RULES = (
    FaultRule(match="#500#", kind=FaultKind.SERVER_ERROR),
    FaultRule(match="#503#", kind=FaultKind.UNAVAILABLE),
    FaultRule(match="#EMPTY#", kind=FaultKind.EMPTY_DATA),
)
#: (prompt, extra fields, outcome) — one request each, in this order.
MIX: list[tuple[str, dict[str, object], Outcome]] = [
    ("a calm lake", {}, Outcome.OK),
    ("#500# a calm lake", {}, Outcome.SERVER_ERROR),
    ("a forbidden lake", {}, Outcome.MODERATION_BLOCKED),
    ("#EMPTY# a calm lake", {}, Outcome.BAD_RESPONSE),
    ("a calm lake", {"size": "100x100"}, Outcome.INVALID_REQUEST),
    ("#503# a calm lake", {}, Outcome.SERVER_ERROR),
    ("a calm lake", {"n": 2}, Outcome.OK),
]
POLICY = frozenset({Outcome.SERVER_ERROR, Outcome.MODERATION_BLOCKED})


async def _used_quota(client: httpx.AsyncClient, profile: str, key: str) -> int:
    response = await client.get(f"/{profile}/api/usage/token", headers=auth(key))
    return int(response.json()["data"]["total_used"])


@pytest.mark.parametrize(
    ("profile", "key", "extra"),
    [
        ("laozhang", DEFAULT_KEY, {}),
        ("openai", OPENAI_KEY, {"quality": "low"}),
    ],
)
async def test_call_log_and_balance_agree_with_the_policy_to_the_cent(
    in_process: InProcess, profile: str, key: str, extra: dict[str, object]
) -> None:
    config = SandboxConfig(fault_rules=RULES, charged_failures=POLICY)
    async with in_process(config) as (client, sandbox):
        before = await _used_quota(client, profile, key)
        provider_ids: list[str] = []
        for index, (prompt, fields, _) in enumerate(MIX):
            gateway = profile == "laozhang"
            size = {} if gateway or "size" in fields else {"size": "1024x1024"}
            request = {"model": "gpt-image-2", "prompt": prompt, **size, **extra, **fields}
            if gateway and "size" in fields:
                request["model"] = "gpt-image-2-vip"
            response = await client.post(
                f"/{profile}/v1/images/generations",
                json=request,
                headers=auth(key, **{"X-Client-Request-Id": f"job-{index}"}),
            )
            header = "x-oneapi-request-id" if gateway else "x-request-id"
            provider_ids.append(response.headers[header])
        after = await _used_quota(client, profile, key)
        rows = (await client.get(f"/{profile}/api/log/token", headers=auth(key))).json()["data"]

    records = sandbox.requests()
    assert [r.outcome for r in records] == [outcome for _, _, outcome in MIX]
    charged = [r for r in records if r.outcome is Outcome.OK or r.outcome in POLICY]
    # One consume row per charged request, newest first, joined by the provider's request id.
    assert [row["request_id"] for row in reversed(rows)] == [r.provider_request_id for r in charged]
    assert [r.provider_request_id for r in records] == provider_ids
    assert [f"job-{i}" for i, r in enumerate(records) if r in charged] == [
        r.client_request_id for r in charged
    ]
    # Uncharged requests cost nothing; charged ones what the log says; the balance moved by the sum.
    assert all(r.charged_quota == 0 for r in records if r not in charged)
    assert [row["quota"] for row in reversed(rows)] == [r.charged_quota for r in charged]
    assert after - before == sum(row["quota"] for row in rows)
    delta = Decimal(after - before) / 500_000
    assert delta.quantize(Decimal("0.01")) == Decimal(str(round(sandbox.charged_usd(), 2)))
    if profile == "laozhang":
        # $0.03 per call x n: 1 + server error + moderation + 503 + (n=2) = 6 calls.
        assert after - before == 6 * 15_000
    else:
        # A charged failure costs what its success would have: prompt tokens at $5/M plus
        # 200 low-quality 1024x1024 output tokens (x n) at $30/M, in quota units.
        def expected(record: RequestRecord) -> int:
            n = int(record.params.get("n", 1))
            usd = Decimal(text_tokens(record.prompt or "") * 5 + n * 200 * 30) / 1_000_000
            return int((usd * 500_000).quantize(Decimal(1), ROUND_HALF_UP))

        assert [r.charged_quota for r in charged] == [expected(r) for r in charged]


async def test_auth_and_quota_failures_are_never_charged() -> None:
    with pytest.raises(ValueError, match="cannot charge"):
        SandboxConfig(charged_failures=frozenset({Outcome.AUTH}))


async def test_policy_all_charges_even_a_rate_limited_request(
    in_process: InProcess, fake_clock: FakeClock
) -> None:
    config = SandboxConfig(rpm=60, charged_failures=parse_policy("all"))
    request = {"model": "gpt-image-2", "prompt": "x"}
    async with in_process(config, clock=fake_clock) as (client, sandbox):
        ok = await client.post(
            "/laozhang/v1/images/generations", json=request, headers=auth(DEFAULT_KEY)
        )
        limited = await client.post(
            "/laozhang/v1/images/generations", json=request, headers=auth(DEFAULT_KEY)
        )
    assert (ok.status_code, limited.status_code) == (200, 429)
    assert [r.charged_usd for r in sandbox.requests()] == [0.03, 0.03]
    assert sandbox.balance_usd(DEFAULT_KEY) == pytest.approx(99.94)
