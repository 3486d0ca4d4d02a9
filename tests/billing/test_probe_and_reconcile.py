"""probe-billing finds the sandbox's hidden failure-charge policy; reconcile then makes the
ledger agree with what the sandbox charged, to the cent, after a batch full of faults."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from runner.billing import ProbeOptions, probe_billing, reconcile
from runner.models import ChargeEvidence, ChargeStatus, Outcome
from runner.sandbox import FaultKind, FaultRule, Latency, RequestRecord, SandboxConfig
from runner.sandbox.config import CHARGEABLE_FAILURES
from runner.store.charges import BilledAttempt

from .conftest import MakeWorld, World

pytestmark = pytest.mark.anyio

ROUTE = "sandbox-laozhang"
#: Prompt markers the sandbox turns into failures a healthy provider cannot be made to give.
MARKERS = {
    Outcome.SERVER_ERROR: "#P500#",
    Outcome.RATE_LIMITED: "#P429#",
    Outcome.NETWORK: "#PRESET#",
    Outcome.BAD_RESPONSE: "#PEMPTY#",
    # A request the sandbox holds until the client gives up. Not a slow generation that a
    # short client timeout outruns: a timeout that short (0.1 s against 0.3 s) fired, on a
    # loaded machine, before the request reached the sandbox, which then had nothing to
    # charge or log.
    Outcome.TIMEOUT: "#PHANG#",
}
RULES = (
    FaultRule(match="#PHANG#", kind=FaultKind.HANG),
    FaultRule(match="#P500#", kind=FaultKind.SERVER_ERROR),
    FaultRule(match="#P429#", kind=FaultKind.RATE_LIMIT),
    FaultRule(match="#PRESET#", kind=FaultKind.RESET),
    FaultRule(match="#PEMPTY#", kind=FaultKind.EMPTY_DATA),
    FaultRule(match="#HANG#", kind=FaultKind.HANG, times=2),
)
#: Every failure class the probes provoke (the five markers plus invalid and moderation).
PROBED = frozenset(MARKERS) | {Outcome.INVALID_REQUEST, Outcome.MODERATION_BLOCKED, Outcome.TIMEOUT}
POLICIES = {
    "nothing": frozenset(),
    "timeout": frozenset({Outcome.TIMEOUT}),
    "server_error": frozenset({Outcome.SERVER_ERROR}),
    "everything": CHARGEABLE_FAILURES,
}
#: The timeout probe gives up after 1 s; the sandbox files its charge, if any, when it sees the
#: client leave. A probe of a policy that charges nothing for timeouts waits all of
#: ``timeout_settle`` for it.
OPTIONS = ProbeOptions(
    markers=MARKERS, timeout_after=1.0, settle=0.5, timeout_settle=1.0, poll=0.05
)
#: The route's client timeout (the probes but the timeout one, and the batch): a hang fault
#: outlasts it, a generation or a reset does not, even on a loaded machine (at 1 s a reset
#: probe once came out a timeout).
CONFIG = '[routes."sandbox-laozhang"]\ntimeout = 2.0\n'
BATCH_FAULTS = {
    FaultKind.SERVER_ERROR: 0.15,
    FaultKind.EMPTY_DATA: 0.08,
    FaultKind.RESET: 0.05,
    FaultKind.RATE_LIMIT: 0.04,
}


def batch_lines(count: int) -> list[dict[str, str]]:
    lines = [{"id": f"j{i}", "prompt": f"a lighthouse at dusk, variant {i}"} for i in range(count)]
    lines[3]["prompt"] += " #HANG#"
    lines[7]["prompt"] += " #HANG#"
    lines[11]["prompt"] = "a forbidden lighthouse"
    return lines


async def run_probe(world: World) -> set[Outcome]:
    cfg = world.settings()
    store = await world.store()
    try:
        report = await probe_billing(
            store,
            catalog=cfg.catalog,
            book=cfg.book,
            data_dir=cfg.data_dir,
            environ=cfg.environ,
            route_name=ROUTE,
            options=OPTIONS,
        )
    finally:
        await store.close()
    assert [r.outcome for r in report.results] == [r.probe.provoke for r in report.results]
    assert {r.outcome for r in report.results} == PROBED | {Outcome.OK}
    assert report.mode == "call log"
    # What a probe says it cost is what the sandbox charged for that request (read once the
    # sandbox has logged every probe: an abandoned one settles there a moment later).
    seen = await world.settled({r.attempt_id for r in report.results if r.attempt_id})
    charged = {r.client_request_id: r.charged_usd for r in seen}
    assert {r.attempt_id: r.observed_usd for r in report.results} == charged
    return {
        r.outcome
        for r in report.results
        if r.outcome is not Outcome.OK and r.observed is ChargeStatus.CHARGED
    }


async def attempts(world: World) -> list[BilledAttempt]:
    store = await world.store()
    try:
        return await store.billed_attempts()
    finally:
        await store.close()


def assert_matches_sandbox(ledger: Sequence[BilledAttempt], seen: Sequence[RequestRecord]) -> None:
    """Every attempt carries exactly the sandbox's charge for its request; totals agree."""
    by_client = {r.client_request_id: r for r in seen}
    for attempt in ledger:
        record = by_client[attempt.id]
        expected = ChargeStatus.CHARGED if record.charged_quota else ChargeStatus.NOT_CHARGED
        assert attempt.charge_status is expected, (attempt.outcome, record.outcome)
        assert attempt.cost_usd == pytest.approx(record.charged_usd, abs=1e-9)
    ledger_total = round(sum(a.cost_usd for a in ledger), 6)
    sandbox_total = round(sum(r.charged_usd for r in seen), 6)
    assert ledger_total == sandbox_total
    assert round(ledger_total, 2) == round(sandbox_total, 2)


@pytest.mark.serial  # a 2 s route timeout against hanging requests
@pytest.mark.parametrize("policy", list(POLICIES))
async def test_probe_finds_the_policy_and_reconcile_settles_the_ledger_to_the_cent(
    world: MakeWorld, policy: str
) -> None:
    hidden = POLICIES[policy]
    w = world(
        SandboxConfig(latency=Latency(mean=0.05), fault_rules=RULES, charged_failures=hidden),
        config_text=CONFIG,
    )

    discovered = await run_probe(w)
    assert discovered == hidden & PROBED

    w.handle.sandbox.configure(latency=Latency(mean=0.05), fault_rates=BATCH_FAULTS, hang_seconds=5)
    batch = await w.submit(batch_lines(30), ROUTE, name=f"faults-{policy}")
    result = await w.run([batch.id], concurrency=8, rpm=6000)
    assert result.report is not None

    before = [a for a in await attempts(w) if a.batch_id == batch.id]
    assert {a.outcome for a in before} >= {Outcome.OK, Outcome.TIMEOUT, Outcome.SERVER_ERROR}
    # The worker priced failures with the observed policy, not the documented one.
    for attempt in before:
        if attempt.outcome in PROBED:
            charged = attempt.outcome in hidden
            assert attempt.charge_status is (
                ChargeStatus.CHARGED if charged else ChargeStatus.NOT_CHARGED
            ), attempt.outcome

    ledger = await attempts(w)
    seen = await w.settled({a.id for a in ledger})
    cfg = w.settings()
    store = await w.store()
    try:
        report = await reconcile(store, cfg.catalog, ROUTE, environ=cfg.environ, settle=0.0)
    finally:
        await store.close()

    assert report.unknown == 0
    assert report.unmatched_rows == 0
    after = await attempts(w)
    assert_matches_sandbox(after, seen)
    assert all(a.charge_evidence in (ChargeEvidence.PROBE, ChargeEvidence.CALL_LOG) for a in after)
    used = w.handle.sandbox.account("sk-default-sandbox", "laozhang").used / 500_000
    assert round(sum(a.cost_usd for a in after), 6) == pytest.approx(used, abs=1e-9)
    # Balance readings from the probes (before) and from reconcile (after) bracket it all.
    assert report.balance is not None
    assert report.balance.gap_usd == pytest.approx(0.0, abs=1e-9)
