"""One job through one attempt: build, admit, record, send, classify, save, settle.

The order matters for money: the ledger row is committed (``start_attempt``) after the rate
gate admits the request and before a single byte leaves, and every way out of ``run_job`` —
success, failure, route stop, cancellation — finishes that row. Writing the images of a paid
answer is :mod:`runner.run.save`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio

from runner.abc import Ledger
from runner.errors import AttemptError
from runner.files.outputs import mismatch_summary
from runner.http.send import Exchange, send
from runner.models import Job, JobState, Outcome, Usage, utcnow
from runner.pricing import (
    CostResult,
    PriceBook,
    PricedJob,
    PriceNotFound,
    attempt_cost,
    worst_case,
)
from runner.routes import Route
from runner.run import verdict
from runner.run.answers import answered, job_images, refused
from runner.run.lane import Lane
from runner.run.memory import ByteBudget
from runner.run.records import result_record, start_record
from runner.run.save import save_images
from runner.run.spending import Spending, exposure_of
from runner.run.stats import JobSettled, RoutePause, RunStats
from runner.run.stores import JobStore
from runner.run.verdict import Verdict
from runner.shapes import LoadedImage, ParsedResponse, PreparedRequest
from runner.shapes.base import effective_model
from runner.store import AttemptResult, AttemptStart, LeaseLost, OutputRecord

#: Most worst cases kept (jobs differ in what moves their price mostly by prompt length).
WORST_KEPT = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class Paid:
    """A 200 that parsed as its shape's answer, priced from its own usage before any check of
    its images: whatever fails after (an image that does not decode, a URL that cannot be
    fetched, the run stopping) keeps this price and the route's charge status for a 200.

    Attributes:
        usage: the usage the answer reported, or ``None``.
        cost: what the answer costs.
    """

    usage: Usage | None
    cost: CostResult


@dataclass(slots=True, kw_only=True)
class JobRunner:
    """Runs single jobs for a worker; shared by all lanes of a run."""

    store: JobStore
    #: Where attempts are recorded: the store itself, or a group-committing writer over it.
    ledger: Ledger
    book: PriceBook
    data_dir: Path
    worker_id: str
    stats: RunStats
    #: The run's budget scopes; every attempt reserves its worst case here before it starts.
    spending: Spending
    #: Bounds the memory held by large responses across all in-flight attempts.
    memory: ByteBudget | None = None
    #: (route, what moves the price) -> that route and the worst case (asked once per job;
    #: the route is kept to tell it from another that took its id).
    _worst: dict[tuple[int, PricedJob], tuple[Route, float]] = field(default_factory=dict)

    async def run_job(self, lane: Lane, job: Job) -> None:
        """Take ``job`` through one attempt and leave it in its next state."""
        try:
            prepared = await self._prepare(lane, job)
            worst = self.worst_price(lane, job)
        except AttemptError as exc:
            await self.leave_unsent(lane, job, exc)
            return
        reservation = await self.spending.reserve(job.batch_id, worst)
        if reservation is None:
            await self.leave_unsent(lane, job, budget_stop=self.spending.stopped)
            return
        await lane.gate.admit(images=job_images(job))
        # The spacing wait comes before the start row, not between it and the send: a process
        # killed in that wait would leave a row judged `unknown` for a request that never
        # left. On a shared schedule its last few milliseconds come after the row (see
        # `SharedGate.leave`), so that the request leaves on its slot's time.
        await lane.gate.depart()
        if lane.gate.stopped:
            lane.gate.unsent()
            reservation.cancel()
            await self.leave_unsent(lane, job)
            return
        start = start_record(lane, job, prepared, worst_usd=worst, worker_id=self.worker_id)
        try:
            await self.ledger.start_attempt(start)
        except LeaseLost:
            lane.gate.unsent()
            reservation.cancel()
            return
        await lane.gate.leave()
        if lane.gate.stopped:
            # The route stopped while the request waited for its slot after its row: it never
            # left, so its attempt is closed as not sent and the job goes back to the queue.
            unsent = AttemptError(Outcome.INTERRUPTED, lane.gate.stopped, sent=False)
            with anyio.CancelScope(shield=True):
                result = await self._failed(lane, job, start, unsent, None)
        else:
            result = await self._attempt(lane, job, start, prepared)
        reservation.settle(exposure_of(result))

    async def _prepare(self, lane: Lane, job: Job) -> PreparedRequest:
        need_bytes = lane.route.shape == "images"
        images = [await lane.loader.load(s, need_bytes=need_bytes) for s in job.images]
        mask: LoadedImage | None = None
        if job.mask is not None:
            mask = await lane.loader.load(job.mask, need_bytes=need_bytes)
        return lane.adapter.build(lane.route, job, images, mask)

    async def settle_answer(
        self, lane: Lane, job: Job, start: AttemptStart, body: Any, request_id: str | None
    ) -> AttemptResult:
        """Settle an attempt whose 200 came another way (a remote batch's output line) as a
        synchronous 200 is: priced from its own usage, its images decoded, verified and
        stored, the verdict applied. ``job`` is as it was before this attempt started."""
        exchange = _arrived(start, 200, request_id)
        paid: Paid | None = None
        try:
            parsed = lane.adapter.parse(body)
            paid = Paid(usage=parsed.usage, cost=self._cost(lane, job, Outcome.OK, parsed))
            return await self._succeeded(lane, job, start, exchange, parsed, paid)
        except AttemptError as exc:
            with anyio.CancelScope(shield=True):
                result = await self._failed(lane, job, start, exc, exchange, paid)
            return result  # noqa: RET504

    async def settle_error(
        self, lane: Lane, job: Job, start: AttemptStart, error: AttemptError
    ) -> AttemptResult:
        """Settle an attempt whose error came another way (a remote batch's error line) as a
        synchronous error is: classified, charged by the route's policy, retried or not."""
        exchange = (
            _arrived(start, error.status, error.provider_request_id) if error.status else None
        )
        with anyio.CancelScope(shield=True):
            result = await self._failed(lane, job, start, error, exchange)
        return result  # noqa: RET504

    def worst_price(self, lane: Lane, job: Job) -> float:
        """The most an attempt of ``job`` can cost (what budgets reserve)."""
        priced = PricedJob.from_job(job)
        known = self._worst.get((id(lane.route), priced))
        if known is not None and known[0] is lane.route:
            return known[1]
        try:
            worst = worst_case(self.book, lane.route, priced)
        except PriceNotFound as exc:
            # Never send what cannot be priced (budgets need the worst case), and never let
            # one job's model override bring down the run: fail this job, with the fix named.
            raise AttemptError(Outcome.INVALID_REQUEST, str(exc), sent=False) from exc
        if len(self._worst) >= WORST_KEPT:
            self._worst.clear()
        self._worst[id(lane.route), priced] = (lane.route, worst)
        return worst

    async def _attempt(
        self, lane: Lane, job: Job, start: AttemptStart, prepared: PreparedRequest
    ) -> AttemptResult:
        exchange: Exchange | None = None
        paid: Paid | None = None
        with self.stats.attempt():
            try:
                exchange = await send(lane.client, prepared, start.id, self.memory)
                parsed = lane.adapter.parse(exchange.body)
                paid = Paid(usage=parsed.usage, cost=self._cost(lane, job, Outcome.OK, parsed))
                seen = answered(job, exchange.rate_limits, parsed.usage, exchange.latency_ms)
                await lane.gate.observe(seen)
                # From here on the payloads are the only reference to each image's base64 text:
                # dropping the parsed body lets every copy go as soon as its image is on disk.
                exchange = replace(exchange, body=None)
                return await self._succeeded(lane, job, start, exchange, parsed, paid)
            except AttemptError as exc:
                # Shielded: a cancellation here would skip the row and leave it `sending`
                # (the sibling `except` below does not catch what this handler raises).
                with anyio.CancelScope(shield=True):
                    if paid is None:  # an answer that parsed was observed above
                        await lane.gate.observe(refused(job, exc))
                    result = await self._failed(lane, job, start, exc, exchange, paid)
                # Returned outside the scope: a cancel scope may swallow what it exits with.
                return result  # noqa: RET504
            except OSError as exc:
                # The disk refused a paid image (full, read-only, gone): record the attempt as
                # paid and failed (never re-sent by itself), and send nothing more to lose.
                lane.gate.stop(f"disk: {exc}")
                error = AttemptError(Outcome.INTERRUPTED, f"image not written: {exc}")
                with anyio.CancelScope(shield=True):
                    result = await self._failed(lane, job, start, error, exchange, paid)
                return result  # noqa: RET504
            except anyio.get_cancelled_exc_class():
                with anyio.CancelScope(shield=True):
                    error = AttemptError(Outcome.INTERRUPTED, "run stopped while in flight")
                    await self._failed(lane, job, start, error, exchange, paid)
                raise
            finally:
                if exchange is not None and self.memory is not None:
                    await self.memory.release(exchange.held)

    def _cost(
        self, lane: Lane, job: Job, outcome: Outcome, parsed: ParsedResponse | None = None
    ) -> CostResult:
        """What an attempt with ``outcome`` costs by the route's policy; with ``parsed``, from
        the answer's own usage and images."""
        return attempt_cost(
            self.book,
            lane.route,
            job=PricedJob.from_job(job),
            usage=parsed.usage if parsed is not None else None,
            outcome=outcome,
            images=len(parsed.images) if parsed is not None else 0,
        )

    async def _succeeded(
        self,
        lane: Lane,
        job: Job,
        start: AttemptStart,
        exchange: Exchange,
        parsed: ParsedResponse,
        paid: Paid,
    ) -> AttemptResult:
        files, problems = await save_images(
            lane,
            job,
            start.id,
            parsed.images,
            exchange.deadline,
            data_dir=self.data_dir,
            worker_id=self.worker_id,
        )
        if not files:
            raise problems[0]  # no image to keep: the paid 200 is recorded as that failure
        mismatch = mismatch_summary(files) if lane.route.on_mismatch == "fail" else None
        # Images that did decode are a paid success (rule 1) even when others of the same
        # answer did not: keep them, say what was lost, never re-send.
        note = "; ".join(p.message for p in problems) or None
        decision = verdict.succeeded(paid.cost, refused=mismatch)
        result = result_record(
            start,
            Outcome.OK,
            exchange=exchange,
            verdict=decision,
            usage=paid.usage.to_json() if paid.usage else None,
            images_returned=len(files),
            note="; ".join(m for m in (mismatch, note) if m) or None,
        )
        return await self._apply(lane, job, result, decision, files)

    async def _failed(
        self,
        lane: Lane,
        job: Job,
        start: AttemptStart,
        exc: AttemptError,
        exchange: Exchange | None,
        paid: Paid | None = None,
    ) -> AttemptResult:
        """Record a failed attempt; one whose 200 was already priced (``paid``) keeps that."""
        cost = paid.cost if paid is not None else self._cost(lane, job, exc.outcome)
        decision = verdict.failed(
            exc,
            cost,
            attempts=job.attempts + 1,
            first_attempt_at=job.first_attempt_at or start.started_at,
            policy=lane.policy,
            now=utcnow(),
            own_model=effective_model(lane.route, job) == lane.route.model,
        )
        usage = paid.usage.to_json() if paid is not None and paid.usage is not None else None
        result = result_record(
            start, exc.outcome, exchange=exchange, error=exc, verdict=decision, usage=usage
        )
        return await self._apply(lane, job, result, decision)

    async def _apply(
        self,
        lane: Lane,
        job: Job,
        result: AttemptResult,
        decision: Verdict,
        files: Sequence[OutputRecord] = (),
    ) -> AttemptResult:
        """Make a verdict take effect: the route's pause or stop, the ledger row, the stats."""
        pause = None
        if decision.pause_s is not None:
            await lane.gate.pause(decision.pause_s)
            pause = RoutePause(
                until=anyio.current_time() + decision.pause_s,
                reason=decision.pause_reason or decision.outcome.value,
            )
        if decision.stop is not None:
            lane.gate.stop(decision.stop)
        if decision.state is JobState.SUCCEEDED:
            await self.ledger.complete(result, files)
        elif decision.state is JobState.WAITING and decision.retry_at is not None:
            await self.ledger.retry_later(result, decision.retry_at)
        elif decision.state is JobState.QUEUED:
            await self.ledger.release(result, job.id, JobState.QUEUED)
        else:
            await self.ledger.fail(result, files)
        stopped = (lane.gate.stopped or "") if decision.stop is not None else None
        self.stats.record(
            JobSettled(
                route=lane.route.name,
                state=decision.state,
                outcome=decision.outcome,
                spent_usd=decision.spent_usd,
                route_stopped=stopped,
                paused=pause,
            )
        )
        return result

    async def leave_unsent(
        self,
        lane: Lane,
        job: Job,
        error: AttemptError | None = None,
        *,
        budget_stop: str | None = None,
    ) -> None:
        """Leave a job that sent nothing: failed if it cannot be sent at all, else released."""
        if error is None:
            await self.store.release_unstarted(self.worker_id, [job.id])
        else:
            await self.store.fail_unsent(job.id, error.outcome.value, error.message)
        state = JobState.QUEUED if error is None else JobState.FAILED
        self.stats.record(JobSettled(route=lane.route.name, state=state, budget_stop=budget_stop))


def _arrived(start: AttemptStart, status: int, request_id: str | None) -> Exchange:
    """The exchange of an answer that came later, another way (latency: since the start)."""
    latency = (utcnow() - start.started_at).total_seconds() * 1000
    return Exchange(
        status=status,
        body=None,
        provider_request_id=request_id,
        gateway_request_id=None,
        latency_ms=latency,
    )
