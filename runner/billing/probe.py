"""``imagerun probe-billing``: observe, one request at a time, which failures a route charges.

Every probe is an ordinary attempt: it belongs to a job of an internal batch
(``probe-<route>-<time>``), its ledger row is committed before it leaves, and it is sent,
classified and recorded by the same :class:`runner.run.attempt.JobRunner` as any job. After each
one the account's call log (or, without one, its balance) is polled until the charge shows up
or ``settle`` seconds pass (after a timeout: until its upstream generation must have ended);
the verdict is written on the attempt (evidence ``probe``) and as the route's observed policy
for that class.

The probes assume the key is otherwise idle while they run: a charge row that names none of
our ids (a gateway that does not log client ids, a timed-out request) is attributed to the
probe in flight. Use a dedicated key, or no other traffic, while probing.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import anyio
import httpx

from runner.abc import Charges, Ledger, Queue, Workers
from runner.billing.endpoints import (
    AccountEndpoints,
    Balance,
    BillingUnavailable,
    account_client,
    read_balance,
    read_call_log,
)
from runner.billing.findings import ProbeReport, ProbeResult
from runner.billing.matching import rows_for
from runner.billing.plan import Probe, ProbeOptions, plan_probes, probes_worst_case
from runner.models import ChargeEvidence, ChargeStatus, JobSpec, Outcome, utcnow
from runner.pricing import PriceBook
from runner.routes import Catalog, Route
from runner.run.attempt import JobRunner
from runner.run.gate import RouteGate
from runner.run.lane import Lane
from runner.run.lanes import LaneClients, assemble, open_clients
from runner.run.retry import RetryPolicy
from runner.run.spending import RunCap, Spending
from runner.run.stats import RunStats
from runner.run.stores import JobStore
from runner.store import BatchInfo
from runner.store.charges import BalanceSnapshot, BilledAttempt, ChargeObservation, ChargeUpdate


@runtime_checkable
class ProbeStore(Queue, JobStore, Ledger, Workers, Charges, Protocol):
    """What a billing probe needs of the store: a batch of its own, run serially, then its
    charges (each role is documented in :mod:`runner.abc`)."""


#: Lease on a probe job: long enough for the slowest generation and its settling.
LEASE_SECONDS = 3600.0
#: A balance move smaller than one quota unit ($0.000002) is rounding, not a charge.
TOLERANCE_USD = 0.000002


async def probe_billing(
    store: ProbeStore,
    *,
    catalog: Catalog,
    book: PriceBook,
    data_dir: Path,
    environ: Mapping[str, str],
    route_name: str,
    options: ProbeOptions,
    endpoints: AccountEndpoints | None = None,
) -> ProbeReport:
    """Run the probes of :func:`runner.billing.plan.plan_probes` on ``route_name``, serially.

    Raises:
        BillingUnavailable: neither the call log nor the balance can be read (nothing sent).
    """
    route = catalog.get(route_name)
    probes = plan_probes(catalog, route, options)
    worst = probes_worst_case(book, route, probes)
    endpoints = endpoints or AccountEndpoints.for_route(route)
    async with AsyncExitStack() as stack:
        account = await stack.enter_async_context(account_client(route, environ))
        notes: list[str] = []
        log_ok = await _check_readable(account, endpoints, notes)
        batch = await _probe_batch(store, route, probes, worst)
        worker_id = f"probe-{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(3)}"
        prober = _Prober(
            store=store,
            route=route,
            batch=batch,
            endpoints=endpoints,
            options=options,
            account=account,
            log_ok=log_ok,
            jobs=JobRunner(
                store=store,
                ledger=store,  # probes are serial: nothing to group
                book=book,
                data_dir=data_dir,
                worker_id=worker_id,
                stats=RunStats(),
                # The probes' batch is the whole run: its worst case caps what they may spend.
                spending=Spending(store=store, worker_id=worker_id, cap=RunCap(cap_usd=worst)),
            ),
        )
        await prober.open(stack, environ)
        results = await prober.run_all(probes, notes)
    return ProbeReport(
        route=route.name,
        batch=batch,
        worst_case_usd=worst,
        mode="call log" if log_ok else "balance",
        results=results,
        notes=notes,
    )


async def _check_readable(
    account: httpx.AsyncClient, endpoints: AccountEndpoints, notes: list[str]
) -> bool:
    """Whether the call log can be read; the balance must be, or nothing is sent."""
    await read_balance(account, endpoints)
    try:
        await read_call_log(account, endpoints)
    except BillingUnavailable as exc:
        notes.append(f"no call log ({exc}); verdicts rest on balance deltas alone")
        return False
    return True


async def _probe_batch(
    store: ProbeStore, route: Route, probes: list[Probe], worst: float
) -> BatchInfo:
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    name = f"probe-{route.name}-{stamp}-{secrets.token_hex(2)}"
    plan = json.dumps([[p.provoke.value, p.prompt, p.params] for p in probes], sort_keys=True)
    specs = [
        JobSpec(
            key=f"probe-{secrets.token_hex(16)}",
            ext_id=f"{n}-{p.provoke.value}",
            line=n,
            prompt=p.prompt,
            params=p.params,
        )
        for n, p in enumerate(probes, start=1)
    ]
    snapshot = route.public_dict()
    snapshot.pop("api_key_set", None)
    result = await store.submit(
        name=name,
        route=route.name,
        manifest="(imagerun probe-billing)",
        manifest_sha256=hashlib.sha256(plan.encode()).hexdigest(),
        route_snapshot=snapshot,
        budget_usd=worst,
        specs=specs,
    )
    return result.batch


@dataclass(slots=True, kw_only=True)
class _Prober:
    store: ProbeStore
    route: Route
    batch: BatchInfo
    endpoints: AccountEndpoints
    options: ProbeOptions
    account: httpx.AsyncClient
    log_ok: bool
    jobs: JobRunner
    clients: dict[float | None, LaneClients] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)

    async def open(self, stack: AsyncExitStack, environ: Mapping[str, str]) -> None:
        """HTTP clients: the route's own timeout, and the probes' short client timeouts."""
        key = self.route.api_key(environ) or ""
        tls = httpx.create_ssl_context()
        for timeout in {None, self.options.timeout_after}:
            self.clients[timeout] = await open_clients(
                stack, self.route, api_key=key, concurrency=1, tls=tls, call_timeout=timeout
            )

    async def run_all(self, probes: list[Probe], notes: list[str]) -> list[ProbeResult]:
        worker = self.jobs.worker_id
        await self.store.register_worker(worker, socket.gethostname(), os.getpid())
        results: list[ProbeResult] = []
        try:
            for probe in probes:
                result = await self.run_one(probe)
                results.append(result)
                if result.outcome is not None and result.outcome.stops_route:
                    notes.append(f"stopped after {result.outcome.value}: {result.error}")
                    break
        finally:
            with anyio.CancelScope(shield=True):
                await self.store.cancel(self.batch.id)
                await self.store.stop_worker(worker)
        return results

    def _lane(self, probe: Probe) -> Lane:
        # A fresh gate per probe: a probe's 429 or stop is its finding, not the next one's wait.
        return assemble(
            self.route,
            self.clients[probe.client_timeout],
            batch_ids=[self.batch.id],
            concurrency=1,
            gate=RouteGate(self.route.rpm),
            policy=RetryPolicy(max_attempts=1),
        )

    async def run_one(self, probe: Probe) -> ProbeResult:
        claimed = await self.store.claim(
            worker_id=self.jobs.worker_id,
            batch_ids=[self.batch.id],
            limit=1,
            lease_seconds=LEASE_SECONDS,
        )
        before = await read_balance(self.account, self.endpoints)
        known: set[tuple[Any, ...]] = set()
        if self.log_ok:
            known = {r.key for r in (await read_call_log(self.account, self.endpoints)).rows}
        if claimed:
            await self.jobs.run_job(self._lane(probe), claimed[0])
        attempt = await self._new_attempt()
        if attempt is None:
            return _unsent(probe)
        wait = self.options.settle
        if attempt.outcome is Outcome.TIMEOUT:
            wait = max(wait, self.options.timeout_settle or self.route.timeout)
        status, usd, log_usd, after = await self._settle(attempt, known, before, wait)
        result = ProbeResult(
            probe=probe,
            attempt_id=attempt.id,
            outcome=attempt.outcome,
            http_status=attempt.http_status,
            error=attempt.error_message,
            expected=self.route.charge_policy(attempt.outcome),
            expected_usd=attempt.expected_usd,
            observed=status,
            observed_usd=usd,
            log_usd=log_usd,
            balance_delta_usd=round(after.used_usd - before.used_usd, 6),
        )
        await self._record(attempt, result, before, after)
        return result

    async def _new_attempt(self) -> BilledAttempt | None:
        fresh = [
            a
            for a in await self.store.billed_attempts(batch_ids=[self.batch.id])
            if a.id not in self.seen
        ]
        self.seen.update(a.id for a in fresh)
        return fresh[-1] if fresh else None

    async def _settle(
        self, attempt: BilledAttempt, known: set[tuple[Any, ...]], before: Balance, wait: float
    ) -> tuple[ChargeStatus, float, float | None, Balance]:
        """Poll until the charge shows up in the call log, or ``wait`` seconds pass."""
        deadline = anyio.current_time() + wait
        log_usd: float | None = None
        while True:
            if self.log_ok:
                log = await read_call_log(self.account, self.endpoints)
                rows, _ = rows_for(attempt, log)
                rows = rows or [r for r in log.rows if r.key not in known]
                if rows:
                    log_usd = round(sum(r.usd for r in rows), 6)
                    break
            if anyio.current_time() >= deadline:
                break
            await anyio.sleep(self.options.poll)
        after = await read_balance(self.account, self.endpoints)
        if self.log_ok:
            charged = log_usd is not None
            usd = log_usd or 0.0
        else:
            usd = round(after.used_usd - before.used_usd, 6)
            charged = usd > TOLERANCE_USD
        status = ChargeStatus.CHARGED if charged else ChargeStatus.NOT_CHARGED
        return status, (usd if charged else 0.0), log_usd, after

    async def _record(
        self, attempt: BilledAttempt, result: ProbeResult, before: Balance, after: Balance
    ) -> None:
        account = self.endpoints.account(self.route)
        for balance, when in ((before, "before"), (after, "after")):
            await self.store.record_balance(
                BalanceSnapshot(
                    route=self.route.name,
                    account=account,
                    used_usd=balance.used_usd,
                    remaining_usd=balance.remaining_usd,
                    source="probe",
                    detail={when: attempt.id},
                    taken_at=balance.read_at,
                )
            )
        await self.store.record_charges(
            [
                ChargeUpdate(
                    attempt_id=attempt.id,
                    charge_status=result.observed,
                    evidence=ChargeEvidence.PROBE,
                    observed_usd=result.observed_usd,
                )
            ]
        )
        await self.store.record_observations(
            [
                ChargeObservation(
                    route=self.route.name,
                    outcome=attempt.outcome,
                    charge_status=result.observed,
                    evidence=ChargeEvidence.PROBE,
                    observed_usd=result.observed_usd,
                    attempt_id=attempt.id,
                    detail={k: v for k, v in result.to_json().items() if k != "attempt_id"},
                )
            ]
        )


def _unsent(probe: Probe) -> ProbeResult:
    return ProbeResult(
        probe=probe,
        attempt_id=None,
        outcome=None,
        http_status=None,
        error="not sent (the job could not be started)",
        expected=None,
        expected_usd=None,
        observed=ChargeStatus.NOT_CHARGED,
        observed_usd=0.0,
    )
