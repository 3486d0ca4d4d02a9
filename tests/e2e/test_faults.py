"""Each injected fault, scripted so it is deterministic: the job's fate, its attempts, the log.

Retryable faults succeed after ``times`` failures and fail (with that outcome) when they
outlast the attempt limit; moderation and invalid requests fail at once. Throughout, the
sandbox's request log and the ledger match one-to-one by ``X-Client-Request-Id``.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from runner.sandbox import DEFAULT_MODERATION_WORD, FaultKind, FaultRule, SandboxConfig

from .conftest import MakeWorld
from .harness import (
    RUN_DEADLINE,
    World,
    assert_charges_agree,
    assert_log_matches_ledger,
    check_outputs,
    route_config,
)

MAX_ATTEMPTS = 3
#: Faults before the success in the retry tests (each rate-limit fault costs a 1 s pause).
FAULTS = 1
#: With a hang fault, the client gives up on a hung request after this long (the route's
#: ``timeout``). It applies to the batch's clean requests too, so it leaves them room on a
#: loaded machine; other faults keep the route's own timeout.
HANG_TIMEOUT = 2.0
MARKER = "#FAULT#"

#: Retryable faults: the outcome class each becomes in the ledger, and the HTTP status recorded.
RETRYABLE: dict[FaultKind, tuple[str, int | None]] = {
    FaultKind.SERVER_ERROR: ("server_error", 500),
    # A gateway gave up on the origin, which may have done the work: a timeout.
    FaultKind.BAD_GATEWAY: ("timeout", 502),
    FaultKind.UNAVAILABLE: ("server_error", 503),
    FaultKind.RATE_LIMIT: ("rate_limited", 429),
    FaultKind.HANG: ("timeout", None),
    FaultKind.RESET: ("network", None),
    FaultKind.TRUNCATE: ("bad_response", 200),
    FaultKind.CORRUPT_B64: ("bad_response", 200),
    FaultKind.EMPTY_DATA: ("bad_response", 200),
}


def fault_world(world: MakeWorld, route: str, rule: FaultRule) -> World:
    config = SandboxConfig(fault_rules=(rule,), hang_seconds=10.0, tiny=True)
    # A high rate: these tests are about faults, not pacing (the sandbox has no limit here).
    settings: dict[str, Any] = {"max_attempts": MAX_ATTEMPTS, "rpm": 6000}
    if rule.kind is FaultKind.HANG:
        settings["timeout"] = HANG_TIMEOUT
    return world(config, config_text=route_config(**{route: settings}))


def lines_with_fault(clean: int = 2) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = [{"id": "faulty", "prompt": f"a lighthouse {MARKER}"}]
    lines += [{"id": f"clean-{i}", "prompt": f"a calm sea, take {i}"} for i in range(clean)]
    return lines


async def run_to_end(w: World, batch_id: str, **options: Any) -> None:
    with anyio.fail_after(RUN_DEADLINE):
        await w.run([batch_id], **options)


@pytest.mark.anyio
@pytest.mark.parametrize("route", ["sandbox-openai", "sandbox-laozhang"])
@pytest.mark.parametrize("kind", list(RETRYABLE), ids=str)
async def test_retryable_fault_then_success(world: MakeWorld, route: str, kind: FaultKind) -> None:
    """A fault, then the retry succeeds; the other jobs of the batch are untouched."""
    outcome, status = RETRYABLE[kind]
    w = fault_world(world, route, FaultRule(match=MARKER, kind=kind, times=FAULTS))
    batch = await w.submit(lines_with_fault(), route)

    await run_to_end(w, batch.id)

    ledger = await w.rows(batch)
    assert ledger.states() == {"succeeded": 3}
    faulty = ledger.attempts_of("faulty")
    assert [a["outcome"] for a in faulty] == [outcome] * FAULTS + ["ok"]
    assert [a["http_status"] for a in faulty] == [status] * FAULTS + [200]
    assert ledger.job("faulty")["attempts"] == FAULTS + 1
    assert all(len(ledger.attempts_of(f"clean-{i}")) == 1 for i in range(2))
    seen = await w.settled_requests(len(ledger.attempts))
    assert len(seen) == len(ledger.attempts) == FAULTS + 3
    assert [r.fault for r in seen if r.fault] == [kind] * FAULTS
    assert_log_matches_ledger(ledger, seen)
    assert_charges_agree(ledger, seen)
    check_outputs(w, ledger)
    if status == 200:
        # The answer began, so the provider's request id is on record even though the body
        # was useless: that is what a support ticket or a billing dispute needs.
        assert all(a["gateway_request_id"] or a["provider_request_id"] for a in faulty)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", list(RETRYABLE), ids=str)
async def test_retryable_fault_outlasting_the_attempt_limit_fails(
    world: MakeWorld, kind: FaultKind
) -> None:
    """A fault that keeps coming fails the job with its class after ``max_attempts``."""
    route = "sandbox-laozhang-chat"
    outcome, _ = RETRYABLE[kind]
    w = fault_world(world, route, FaultRule(match=MARKER, kind=kind, times=MAX_ATTEMPTS + 2))
    batch = await w.submit(lines_with_fault(clean=1), route)

    await run_to_end(w, batch.id)

    ledger = await w.rows(batch)
    assert ledger.states() == {"failed": 1, "succeeded": 1}
    job = ledger.job("faulty")
    assert (job["state"], job["last_outcome"], job["attempts"]) == (
        "failed",
        outcome,
        MAX_ATTEMPTS,
    )
    assert [a["outcome"] for a in ledger.attempts_of("faulty")] == [outcome] * MAX_ATTEMPTS
    seen = await w.settled_requests(len(ledger.attempts))
    assert len(seen) == MAX_ATTEMPTS + 1
    assert_log_matches_ledger(ledger, seen)
    assert_charges_agree(ledger, seen)
    assert not [o for o in ledger.outputs if o["job_id"] == job["id"]]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("line", "rules", "outcome", "status"),
    [
        pytest.param(
            {"prompt": f"a {DEFAULT_MODERATION_WORD} scene"},
            (),
            "moderation_blocked",
            400,
            id="trigger-word",
        ),
        pytest.param(
            {"prompt": f"a harbour {MARKER}"},
            (FaultRule(match=MARKER, kind=FaultKind.MODERATION),),
            "moderation_blocked",
            400,
            id="moderation-fault",
        ),
        pytest.param(
            # Priced by imagerun, unknown to the provider: 404 model_not_found.
            {"prompt": "a harbour", "model": "gpt-image-1"},
            (),
            "invalid_request",
            404,
            id="unknown-model",
        ),
    ],
)
async def test_non_retryable_failure_fails_at_once(
    world: MakeWorld,
    line: dict[str, Any],
    rules: tuple[FaultRule, ...],
    outcome: str,
    status: int,
) -> None:
    """Moderation blocks and invalid requests fail after one attempt; nothing is retried."""
    route = "sandbox-openai"
    w = world(SandboxConfig(fault_rules=rules, tiny=True))
    batch = await w.submit([{"id": "bad", **line}, {"id": "good", "prompt": "a harbour"}], route)

    await run_to_end(w, batch.id)

    ledger = await w.rows(batch)
    assert ledger.states() == {"failed": 1, "succeeded": 1}
    [attempt] = ledger.attempts_of("bad")
    assert (attempt["outcome"], attempt["http_status"]) == (outcome, status)
    assert attempt["charge_status"] == "not_charged"
    assert ledger.job("bad")["last_outcome"] == outcome
    seen = w.requests()
    assert len(seen) == 2
    assert_log_matches_ledger(ledger, seen)
    assert_charges_agree(ledger, seen)


@pytest.mark.anyio
async def test_rate_limit_pauses_the_whole_route(world: MakeWorld) -> None:
    """After a 429 with Retry-After nothing is sent on the route until the wait is over."""
    route = "sandbox-openai"
    w = world(
        SandboxConfig(
            fault_rules=(FaultRule(match=MARKER, kind=FaultKind.RATE_LIMIT, times=1),), tiny=True
        )
    )
    batch = await w.submit(lines_with_fault(clean=3), route)

    await run_to_end(w, batch.id, concurrency=1)

    ledger = await w.rows(batch)
    assert ledger.states() == {"succeeded": 4}
    first, retried = ledger.attempts_of("faulty")
    assert (first["outcome"], retried["outcome"]) == ("rate_limited", "ok")
    assert first["retry_after"] == pytest.approx(1.0)
    seen = w.requests()
    [refused] = [r for r in seen if r.status == 429]
    after = [r for r in seen if r.seq > refused.seq]
    assert len(after) == 4
    assert min((r.time - refused.time).total_seconds() for r in after) >= 1.0
    assert_log_matches_ledger(ledger, seen)


@pytest.mark.anyio
async def test_connect_failure_is_recorded_as_never_sent(world: MakeWorld) -> None:
    """Nothing listening: the attempts are `network`, not charged, and the job fails."""
    route = "sandbox-laozhang"
    w = world(
        config_text=route_config(**{route: {"max_attempts": 2, "connect_timeout": 2.0}}),
        # Port 9 (discard) on loopback: nothing listens there, the connect is refused.
        env={"IMAGERUN_ROUTE_SANDBOX_LAOZHANG_BASE_URL": "http://127.0.0.1:9/laozhang/v1"},
    )
    batch = await w.submit([{"id": "lost", "prompt": "a harbour"}], route)

    await run_to_end(w, batch.id)

    ledger = await w.rows(batch)
    assert ledger.job("lost")["state"] == "failed"
    attempts = ledger.attempts_of("lost")
    assert [(a["outcome"], a["charge_status"]) for a in attempts] == [
        ("network", "not_charged")
    ] * 2
    assert w.requests() == []
    assert_log_matches_ledger(ledger, [])


@pytest.mark.anyio
async def test_unpriced_model_fails_that_job_only(world: MakeWorld) -> None:
    """A model override with no price fails its job unsent; the run and other jobs go on."""
    w = world(SandboxConfig(tiny=True))
    lines = [
        {"id": "unpriced", "prompt": "a harbour", "model": "gpt-image-9"},
        {"id": "fine", "prompt": "a harbour"},
    ]
    batch = await w.submit(lines, "sandbox-openai")

    await run_to_end(w, batch.id)

    ledger = await w.rows(batch)
    job = ledger.job("unpriced")
    assert (job["state"], job["attempts"]) == ("failed", 0)
    assert "no prices for model 'gpt-image-9'" in job["last_error"]
    assert ledger.attempts_of("unpriced") == []
    assert ledger.job("fine")["state"] == "succeeded"
    seen = w.requests()
    assert [r.prompt for r in seen] == ["a harbour"]
    assert_log_matches_ledger(ledger, seen)
