"""One job through one attempt: build, admit, record, send, classify, save, settle.

The order matters for money: the ledger row is committed (``start_attempt``) after the rate
gate admits the request and before a single byte leaves, and every way out of ``run_job`` —
success, failure, route stop, cancellation — finishes that row.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio

from runner.errors import AttemptError
from runner.files.atomic import write_atomic
from runner.files.images import ImageError, check_expected, decode_b64, inspect_image
from runner.files.layout import OutputName
from runner.files.outputs import output_record
from runner.http.classify import MODEL_NOT_FOUND
from runner.http.download import download
from runner.http.send import Exchange, send
from runner.models import ChargeStatus, Job, JobState, Outcome, utcnow
from runner.pricing import PriceBook, PricedJob, PriceNotFound, attempt_cost, worst_case
from runner.routes.sizes import parse_size
from runner.run.lane import Lane, RunStats
from runner.run.memory import ByteBudget
from runner.run.spending import Budget
from runner.shapes import ImagePayload, LoadedImage, PreparedRequest
from runner.shapes.base import effective_model
from runner.store import AttemptResult, AttemptStart, LeaseLost, OutputRecord, Store
from runner.store.groupcommit import Ledger

MAX_OUTPUT_BYTES = 200 * 1024 * 1024
#: Images up to this size are verified and written on the event loop (see ``_save``).
INLINE_WRITE_BYTES = 32 * 1024
#: A batch budget is granted to a worker in shares of at least this many worst-case attempts…
GRANT_ATTEMPTS = 2
#: …or this fraction of the budget, whichever is more (fewer grants, still a fair share).
GRANT_SHARE = 0.02
#: Make every image durable against power loss before recording it (slower; see write_atomic).
FSYNC = os.environ.get("IMAGERUN_FSYNC", "") not in ("", "0")


def new_request_id() -> str:
    """Our client request id, sent as ``X-Client-Request-Id`` (ASCII, well under 512 chars)."""
    return "ir-" + secrets.token_hex(12)


@dataclass(slots=True, kw_only=True)
class JobRunner:
    """Runs single jobs for a worker; shared by all lanes of a run."""

    store: Store
    #: Where attempts are recorded: the store itself, or a group-committing writer over it.
    ledger: Ledger
    book: PriceBook
    data_dir: Path
    worker_id: str
    stats: RunStats
    budgets: dict[str, Budget]
    #: Bounds the memory held by large responses across all in-flight attempts.
    memory: ByteBudget | None = None
    #: How long a share of a batch budget is held without renewal (see runner.store.budgets).
    grant_hold_s: float = 120.0
    _grant_locks: dict[str, anyio.Lock] = field(default_factory=dict)

    async def run_job(self, lane: Lane, job: Job) -> None:
        """Take ``job`` through one attempt and leave it in its next state."""
        try:
            prepared = await self._prepare(lane, job)
        except AttemptError as exc:
            await self.store.fail_unsent(job.id, exc.outcome.value, exc.message)
            self.stats.failed += 1
            return
        try:
            worst = worst_case(self.book, lane.route, PricedJob.from_job(job))
        except PriceNotFound as exc:
            # Never send what cannot be priced (budgets need the worst case), and never let
            # one job's model override bring down the run: fail this job, with the fix named.
            await self.store.fail_unsent(job.id, Outcome.INVALID_REQUEST.value, str(exc))
            self.stats.failed += 1
            return
        scopes = [b for key in ("run", job.batch_id) if (b := self.budgets.get(key))]
        if not await self._reserve(scopes, worst):
            await self.store.release_unstarted(self.worker_id, [job.id])
            self.stats.released += 1
            return
        await lane.gate.admit()
        if lane.gate.stopped:
            _cancel(scopes, worst)
            await self.store.release_unstarted(self.worker_id, [job.id])
            self.stats.released += 1
            return
        start = self._start_record(lane, job, prepared, worst)
        try:
            await self.ledger.start_attempt(start)
        except LeaseLost:
            _cancel(scopes, worst)
            return
        result = await self._attempt(lane, job, start, prepared)
        for scope in scopes:
            scope.settle(worst, _exposure(result))

    async def _reserve(self, scopes: list[Budget], worst: float) -> bool:
        reserved: list[Budget] = []
        for scope in scopes:
            if not scope.reserve(worst) and not await self._grow(scope, worst):
                _cancel(reserved, worst)
                self.stats.budget_stop = _budget_reached(scope, worst)
                return False
            reserved.append(scope)
        return True

    async def _grow(self, scope: Budget, worst: float) -> bool:
        """Ask the database for more of a batch's shared budget, then reserve again.

        One request at a time per batch: the lanes that ran out meanwhile first look whether
        the last grant made room, instead of each taking a share of their own.
        """
        if scope.batch_id is None:
            return False
        lock = self._grant_locks.setdefault(scope.batch_id, anyio.Lock())
        async with lock:
            if scope.reserve(worst):
                return True
            need = worst - scope.room()
            want = max(worst * GRANT_ATTEMPTS, (scope.cap_usd or 0.0) * GRANT_SHARE, need)
            granted = await self.store.grant_budget(
                scope.batch_id, self.worker_id, want, at_least=need, hold_s=self.grant_hold_s
            )
            if granted > 0:
                scope.extend(granted)
            return scope.reserve(worst)

    async def _prepare(self, lane: Lane, job: Job) -> PreparedRequest:
        need_bytes = lane.route.shape == "images"
        images = [await lane.loader.load(s, need_bytes=need_bytes) for s in job.images]
        mask: LoadedImage | None = None
        if job.mask is not None:
            mask = await lane.loader.load(job.mask, need_bytes=need_bytes)
        return lane.adapter.build(lane.route, job, images, mask)

    def _start_record(
        self, lane: Lane, job: Job, prepared: PreparedRequest, worst: float
    ) -> AttemptStart:
        route = lane.route
        return AttemptStart(
            id=new_request_id(),
            job_id=job.id,
            batch_id=job.batch_id,
            worker_id=self.worker_id,
            route=route.name,
            provider=route.provider,
            shape=route.shape.value,
            endpoint=prepared.endpoint,
            model=effective_model(route, job),
            billing_unit=route.billing,
            params=prepared.params_sent,
            worst_case_usd=worst,
            started_at=utcnow(),
        )

    async def _attempt(
        self, lane: Lane, job: Job, start: AttemptStart, prepared: PreparedRequest
    ) -> AttemptResult:
        self.stats.in_flight += 1
        self.stats.attempts += 1
        exchange: Exchange | None = None
        try:
            exchange = await send(lane.client, prepared, start.id, self.memory)
            parsed = lane.adapter.parse(exchange.body)
            # From here on the payloads are the only reference to each image's base64 text:
            # dropping the parsed body lets every copy go as soon as its image is on disk.
            exchange = replace(exchange, body=None)
            files = await self._save(lane, job, start.id, parsed.images)
            usage = parsed.usage
            cost = attempt_cost(
                self.book,
                lane.route,
                job=PricedJob.from_job(job),
                usage=usage,
                outcome=Outcome.OK,
                images=len(files),
            )
            result = self._result(start, Outcome.OK, exchange=exchange)
            result = replace(
                result,
                usage=usage.to_json() if usage else None,
                images_returned=len(files),
                expected_usd=cost.expected_usd,
                charge_status=cost.charge_status,
            )
            await self.ledger.complete(result, files)
            self.stats.succeeded += 1
            self.stats.spent_usd += cost.expected_usd
            self.stats.outcomes[Outcome.OK.value] += 1
            return result
        except AttemptError as exc:
            return await self._failed(lane, job, start, exc, exchange)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                error = AttemptError(Outcome.INTERRUPTED, "run stopped while in flight")
                await self._failed(lane, job, start, error, exchange)
            raise
        finally:
            self.stats.in_flight -= 1
            if exchange is not None and self.memory is not None:
                await self.memory.release(exchange.held)

    async def _failed(
        self,
        lane: Lane,
        job: Job,
        start: AttemptStart,
        exc: AttemptError,
        exchange: Exchange | None,
    ) -> AttemptResult:
        outcome = exc.outcome
        cost = attempt_cost(
            self.book,
            lane.route,
            job=PricedJob.from_job(job),
            usage=None,
            outcome=outcome,
            images=0,
        )
        charge, expected = cost.charge_status, cost.expected_usd
        if not exc.sent:
            charge, expected = ChargeStatus.NOT_CHARGED, 0.0
        result = replace(
            self._result(start, outcome, exchange=exchange, error=exc),
            expected_usd=expected,
            charge_status=charge,
        )
        self.stats.outcomes[outcome.value] += 1
        if charge is ChargeStatus.CHARGED:
            self.stats.spent_usd += expected
        attempts = job.attempts + 1
        if outcome is Outcome.RATE_LIMITED:
            await lane.gate.pause(exc.retry_after or lane.policy.backoff(attempts))
        stop = outcome.value if outcome.stops_route else None
        if (
            exc.error_code == MODEL_NOT_FOUND
            and effective_model(lane.route, job) == lane.route.model
        ):
            # The route's own model is out of reach of its key: every job would fail alike.
            stop = MODEL_NOT_FOUND
        if stop is not None:
            lane.gate.stop(f"{stop}: {exc.message}")
            self.stats.stopped_routes.setdefault(lane.route.name, lane.gate.stopped or "")
            await self.ledger.release(result, job.id, JobState.QUEUED)
            self.stats.released += 1
            return result
        if outcome is Outcome.INTERRUPTED:
            # Re-sending costs nothing only where interrupted calls are not charged; elsewhere
            # the job is held as failed until the user says `imagerun retry --failed`.
            if charge is ChargeStatus.NOT_CHARGED:
                await self.ledger.release(result, job.id, JobState.QUEUED)
                self.stats.released += 1
            else:
                await self.ledger.fail(result)
                self.stats.failed += 1
            return result
        next_at = lane.policy.next_try(
            outcome=outcome,
            attempts=attempts,
            first_attempt_at=job.first_attempt_at or start.started_at,
            now=utcnow(),
            hint=exc.retry_after,
        )
        if next_at is not None:
            await self.ledger.retry_later(result, next_at)
            self.stats.retries_scheduled += 1
        else:
            await self.ledger.fail(result)
            self.stats.failed += 1
        return result

    def _result(
        self,
        start: AttemptStart,
        outcome: Outcome,
        *,
        exchange: Exchange | None,
        error: AttemptError | None = None,
    ) -> AttemptResult:
        now = utcnow()
        provider_id = gateway_id = None
        latency = (now - start.started_at).total_seconds() * 1000
        if exchange is not None:
            provider_id, gateway_id = exchange.provider_request_id, exchange.gateway_request_id
            latency = exchange.latency_ms
        elif error is not None:
            provider_id, gateway_id = error.provider_request_id, error.gateway_request_id
            latency = error.latency_ms or latency
        return AttemptResult(
            id=start.id,
            job_id=start.job_id,
            outcome=outcome,
            finished_at=now,
            latency_ms=round(latency, 3),
            http_status=exchange.status if exchange else (error.status if error else None),
            provider_request_id=provider_id,
            gateway_request_id=gateway_id,
            error_type=error.error_type if error else None,
            error_code=error.error_code if error else None,
            error_message=error.message[:2000] if error else None,
            retry_after=error.retry_after if error else None,
        )

    async def _save(
        self, lane: Lane, job: Job, attempt_id: str, payloads: list[ImagePayload]
    ) -> list[OutputRecord]:
        """Decode (or download), verify and write each image; nothing is recorded yet."""
        fmt = job.params.get("output_format")
        raw_size = job.params.get("size")
        size = parse_size(raw_size) if raw_size and raw_size != "auto" else None
        records = []
        for k in range(len(payloads)):
            payload, payloads[k] = payloads[k], _SPENT
            if payload.b64 is not None:
                try:
                    data = decode_b64(payload.b64)
                except ImageError as exc:
                    raise AttemptError(Outcome.BAD_RESPONSE, str(exc)) from exc
                del payload
            else:
                data = await download(lane.fetch, payload.url or "", limit=MAX_OUTPUT_BYTES)
            if len(data) <= INLINE_WRITE_BYTES:
                # Decoding and writing a thumbnail-sized image takes less time than the hop to
                # a worker thread and back; bigger images never block the event loop.
                records.append(self._write(job, attempt_id, k, data, fmt, size))
            else:
                records.append(
                    await anyio.to_thread.run_sync(self._write, job, attempt_id, k, data, fmt, size)
                )
        return records

    def _write(
        self,
        job: Job,
        attempt_id: str,
        k: int,
        data: bytes,
        fmt: str | None,
        size: Any,
    ) -> OutputRecord:
        try:
            info = inspect_image(data)
        except ImageError as exc:
            raise AttemptError(Outcome.BAD_RESPONSE, f"image does not decode: {exc}") from exc
        check_expected(info, fmt=fmt, size=size)
        name = OutputName(batch_id=job.batch_id, job_id=job.id, k=k, format=info.format)
        digest = write_atomic(os.path.join(self.data_dir, name.path), data, fsync=FSYNC)
        return output_record(
            name,
            info,
            sha256=digest,
            size=len(data),
            attempt_id=attempt_id,
            worker_id=self.worker_id,
        )


#: Stands in for a payload once its image has been written (so its base64 text can be freed).
_SPENT = ImagePayload()


def _budget_reached(scope: Budget, worst: float) -> str:
    if scope.batch_id is None:
        return (
            f"budget reached: ${scope.committed_usd + scope.reserved_usd:.4f} committed "
            f"of ${scope.limit_usd:.2f}; the next job could cost up to ${worst:.4f}"
        )
    return (
        f"budget reached: batch {scope.batch_id}'s ${scope.cap_usd or 0.0:.2f} is spent, in "
        f"flight or granted to other live workers; the next job could cost up to ${worst:.4f}"
    )


def _cancel(scopes: list[Budget], worst: float) -> None:
    for scope in scopes:
        scope.cancel(worst)


def _exposure(result: AttemptResult) -> float:
    """What an attempt counts against a budget: anything not known to be free."""
    if result.charge_status is ChargeStatus.NOT_CHARGED:
        return 0.0
    return result.expected_usd or 0.0
