"""The ledger rows of one attempt: the start row committed before it leaves, the result after."""

from __future__ import annotations

import secrets
from typing import Any

from runner.errors import AttemptError
from runner.http.send import Exchange
from runner.models import Job, Outcome, utcnow
from runner.run.lane import Lane
from runner.run.verdict import Verdict
from runner.shapes import PreparedRequest
from runner.shapes.base import effective_model
from runner.store import AttemptResult, AttemptStart


def new_request_id() -> str:
    """Our client request id, sent as ``X-Client-Request-Id`` (ASCII, well under 512 chars)."""
    return "ir-" + secrets.token_hex(12)


def start_record(
    lane: Lane, job: Job, prepared: PreparedRequest, *, worst_usd: float, worker_id: str
) -> AttemptStart:
    """The ``sending`` row of an attempt of ``job`` that may cost up to ``worst_usd``."""
    route = lane.route
    return AttemptStart(
        id=new_request_id(),
        job_id=job.id,
        batch_id=job.batch_id,
        worker_id=worker_id,
        route=route.name,
        provider=route.provider,
        shape=route.shape.value,
        endpoint=prepared.endpoint,
        model=effective_model(route, job),
        billing_unit=route.billing,
        params=prepared.params_sent,
        worst_case_usd=worst_usd,
        started_at=utcnow(),
    )


def result_record(
    start: AttemptStart,
    outcome: Outcome,
    *,
    exchange: Exchange | None,
    error: AttemptError | None = None,
    verdict: Verdict | None = None,
    usage: dict[str, int] | None = None,
    images_returned: int | None = None,
    note: str | None = None,
) -> AttemptResult:
    """The finished row of ``start``: the ids, status and latency the response (or error) had.

    Its cost and charge status are the ``verdict``'s (without one, left for it to fill in);
    ``note`` is the error message of an attempt without an ``error``.
    """
    now = utcnow()
    provider_id = gateway_id = limits = None
    latency = (now - start.started_at).total_seconds() * 1000
    if exchange is not None:
        provider_id, gateway_id = exchange.provider_request_id, exchange.gateway_request_id
        latency, limits = exchange.latency_ms, exchange.rate_limits
    elif error is not None:
        provider_id, gateway_id = error.provider_request_id, error.gateway_request_id
        latency, limits = error.latency_ms or latency, error.rate_limits
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
        error_message=error.message[:2000] if error else note,
        retry_after=error.retry_after if error else None,
        rate_limits=limits.to_json() if limits is not None else None,
        usage=usage,
        images_returned=images_returned,
        **({} if verdict is None else _charge(verdict)),
    )


def _charge(verdict: Verdict) -> dict[str, Any]:
    return {"expected_usd": verdict.expected_usd, "charge_status": verdict.charge_status}
