"""What one attempt's result means for its job and its route: decided here, applied elsewhere.

The functions here do no I/O and keep no state: given what came back, what it costs and where
the job stands, they return a :class:`Verdict`; :class:`runner.run.attempt.JobRunner` applies
it (ledger row, route pause or stop, run statistics) in one place.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from runner.errors import AttemptError
from runner.http.classify import MODEL_NOT_FOUND
from runner.models import ChargeStatus, JobState, Outcome
from runner.pricing import CostResult
from runner.run.retry import RetryPolicy

#: Answers whose server-directed wait is the whole route's (a rate limit, an overload or
#: maintenance), not only the job's.
ROUTE_WAITS = frozenset({Outcome.RATE_LIMITED, Outcome.SERVER_ERROR})


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """The decision on one finished attempt.

    Attributes:
        outcome: the attempt's outcome class.
        state: the job's next state: ``succeeded``; ``waiting`` (tried again at
            ``retry_at``); ``failed``; or ``queued`` (released for a later run to send).
        charge_status: whether the attempt is (expected to be) charged.
        expected_usd: what the attempt is expected to cost (0 when provably not charged).
        retry_at: when a ``waiting`` job is due again.
        pause_s: seconds every request on the route is held (a 429, or a wait the server
            asked for), or ``None``.
        pause_reason: what the pause is for, as the progress line shows it
            (``"429 Retry-After"``, ``"429 backoff"``, ``"503 Retry-After"``).
        stop: why the route stops for this run (``"auth: …"``), or ``None``.
    """

    outcome: Outcome
    state: JobState
    charge_status: ChargeStatus
    expected_usd: float
    retry_at: datetime | None = None
    pause_s: float | None = None
    pause_reason: str | None = None
    stop: str | None = None

    @property
    def spent_usd(self) -> float:
        """What the attempt adds to the run's expected spend: only a charged cost counts."""
        return self.expected_usd if self.charge_status is ChargeStatus.CHARGED else 0.0


def succeeded(cost: CostResult, *, refused: str | None = None) -> Verdict:
    """The verdict on an attempt whose images were all saved.

    ``refused`` says why the route will not take them as the job's result (images not what
    was asked for, on a route with ``on_mismatch = "fail"``): the job fails, but the images
    were delivered and paid for, so they are kept and nothing is re-sent.
    """
    return Verdict(
        outcome=Outcome.OK,
        state=JobState.SUCCEEDED if refused is None else JobState.FAILED,
        charge_status=cost.charge_status,
        expected_usd=cost.expected_usd,
    )


def failed(
    error: AttemptError,
    cost: CostResult,
    *,
    attempts: int,
    first_attempt_at: datetime,
    policy: RetryPolicy,
    now: datetime,
    own_model: bool,
    rng: random.Random | None = None,
) -> Verdict:
    """The verdict on an attempt that ended in ``error``.

    In order: a request that never left costs nothing; a bad key, an exhausted quota, the
    route's own model out of reach, or a 429's or 5xx's server-directed wait
    (``Retry-After``, a rate-limit reset) that ends past the job's deadline stops the route
    and releases the job to the queue; a shorter such wait pauses the route for that long,
    and a 429 without one for the policy's backoff; an interrupted attempt is released when
    interrupted calls are not charged and failed otherwise (a user re-sends it with
    ``imagerun retry --failed``); anything else is retried while the policy allows, then
    failed.

    Args:
        error: how the attempt failed.
        cost: what the route's charge policy makes of the failure.
        attempts: the job's attempts, this one included.
        first_attempt_at: when the job's first attempt started.
        policy: the lane's retry policy.
        now: the current time (UTC).
        own_model: the job asks for the route's own model (no per-job override).
        rng: the source of backoff jitter (a fresh one when ``None``).
    """
    outcome = error.outcome
    charge, expected = cost.charge_status, cost.expected_usd
    if not error.sent:
        charge, expected = ChargeStatus.NOT_CHARGED, 0.0
    stop = _stop_reason(error, own_model=own_model) or _wait_past_deadline(
        error, deadline=_deadline(first_attempt_at, policy, now), now=now
    )
    pause, reason = (None, None) if stop else _pause(error, policy, attempts, rng)
    retry_at = None
    if stop is None and outcome is not Outcome.INTERRUPTED:
        retry_at = policy.next_try(
            outcome=outcome,
            attempts=attempts,
            first_attempt_at=first_attempt_at,
            now=now,
            hint=error.retry_after,
            rng=rng,
        )
    return Verdict(
        outcome=outcome,
        state=_next_state(outcome, charge, stop=stop, retry_at=retry_at),
        charge_status=charge,
        expected_usd=expected,
        retry_at=retry_at,
        pause_s=pause,
        pause_reason=reason,
        stop=stop,
    )


def _next_state(
    outcome: Outcome, charge: ChargeStatus, *, stop: str | None, retry_at: datetime | None
) -> JobState:
    if stop is not None:
        return JobState.QUEUED
    if outcome is Outcome.INTERRUPTED:
        # Re-sending costs nothing only where interrupted calls are not charged; elsewhere
        # the job is held as failed until the user says `imagerun retry --failed`.
        return JobState.QUEUED if charge is ChargeStatus.NOT_CHARGED else JobState.FAILED
    return JobState.FAILED if retry_at is None else JobState.WAITING


def _stop_reason(error: AttemptError, *, own_model: bool) -> str | None:
    """Why ``error`` stops the whole route, or ``None`` when only this job is affected."""
    stop = error.outcome.value if error.outcome.stops_route else None
    if stop is None and error.stops_route:  # the wire says so: e.g. the endpoint moved (301)
        stop = error.error_code or error.outcome.value
    if error.error_code == MODEL_NOT_FOUND and own_model:
        # The route's own model is out of reach of its key: every job would fail alike.
        stop = MODEL_NOT_FOUND
    return None if stop is None else f"{stop}: {error.message}"


def _deadline(first_attempt_at: datetime, policy: RetryPolicy, now: datetime) -> datetime:
    """When the job stops being retried: ``deadline`` after its first attempt.

    A job whose deadline passed before this attempt (it waited in the queue since an earlier
    run) is measured as if this were its first attempt, so that a short wait does not stop
    the route for its sake.
    """
    due = first_attempt_at + timedelta(seconds=policy.deadline)
    return due if due > now else now + timedelta(seconds=policy.deadline)


def _wait_past_deadline(error: AttemptError, *, deadline: datetime, now: datetime) -> str | None:
    """Why the route stops when the server asks for a wait that ends after ``deadline``."""
    if not error.retry_after or not _route_wait(error):
        return None
    until = now + timedelta(seconds=error.retry_after)
    if until <= deadline:
        return None
    return (
        f"{error.outcome.value}: the server asks to wait {error.retry_after:,.0f} s, until "
        f"{until:%Y-%m-%d %H:%M:%S} UTC, past the job's deadline ({deadline:%Y-%m-%d %H:%M:%S} UTC)"
    )


def _route_wait(error: AttemptError) -> bool:
    """Whether the wait ``error`` asks for holds the whole route: a 429's, a 5xx's, and a
    gateway's 502/504/524 (class ``timeout``, but answered with a status)."""
    if error.outcome in ROUTE_WAITS:
        return True
    return error.outcome is Outcome.TIMEOUT and error.status is not None


def _pause(
    error: AttemptError, policy: RetryPolicy, attempts: int, rng: random.Random | None
) -> tuple[float | None, str | None]:
    """How long the whole route holds after ``error``, and why (``(None, None)``: no pause).

    A wait the server asked for on a 429 or a 5xx holds the route (a 503 in maintenance
    too); a 429 without one holds it for the policy's backoff.
    """
    status = str(error.status or error.outcome.value)
    if error.retry_after and _route_wait(error):
        limits = error.rate_limits
        hinted = limits is not None and limits.reset_s == error.retry_after
        return error.retry_after, f"{status} {'rate-limit reset' if hinted else 'Retry-After'}"
    if error.outcome is Outcome.RATE_LIMITED:
        return policy.backoff(attempts, rng), f"{status} backoff"
    return None, None
