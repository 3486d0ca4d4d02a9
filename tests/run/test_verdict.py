"""The verdict on one attempt: the job's next state, its cost, and the route's pause or stop."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from runner.errors import AttemptError
from runner.models import ChargeStatus, JobState, Limit, Outcome, RateLimits
from runner.pricing import CostResult
from runner.run import verdict
from runner.run.retry import RetryPolicy
from runner.run.verdict import Verdict

T0 = datetime(2026, 11, 21, tzinfo=UTC)
POLICY = RetryPolicy(max_attempts=5, deadline=3600.0)


def cost(charge: ChargeStatus = ChargeStatus.UNKNOWN, usd: float = 0.04) -> CostResult:
    return CostResult(expected_usd=usd, charge_status=charge, basis="test")


def judge(
    error: AttemptError,
    charge: ChargeStatus = ChargeStatus.UNKNOWN,
    *,
    attempts: int = 1,
    first: datetime = T0,
    now: datetime = T0,
    policy: RetryPolicy = POLICY,
    own_model: bool = True,
    seed: int | None = None,
) -> Verdict:
    return verdict.failed(
        error,
        cost(charge),
        attempts=attempts,
        first_attempt_at=first,
        policy=policy,
        now=now,
        own_model=own_model,
        rng=random.Random(seed) if seed is not None else None,
    )


def test_success_is_recorded_with_its_cost_and_counts_as_spent() -> None:
    v = verdict.succeeded(cost(ChargeStatus.CHARGED, 0.167))
    assert v == Verdict(
        outcome=Outcome.OK,
        state=JobState.SUCCEEDED,
        charge_status=ChargeStatus.CHARGED,
        expected_usd=0.167,
    )
    assert v.spent_usd == 0.167


def test_images_the_route_refuses_fail_the_job_but_stay_paid() -> None:
    """``on_mismatch = "fail"``: the job fails, the attempt is still an ok, charged success."""
    v = verdict.succeeded(cost(ChargeStatus.CHARGED, 0.167), refused="image 0: asked for …")
    assert v == Verdict(
        outcome=Outcome.OK,
        state=JobState.FAILED,
        charge_status=ChargeStatus.CHARGED,
        expected_usd=0.167,
    )
    assert v.retry_at is None
    assert v.spent_usd == 0.167


#: Every failure class, tried once on a route that does not know whether failures are charged.
EXPECTED_STATE = {
    Outcome.RATE_LIMITED: JobState.WAITING,
    Outcome.SERVER_ERROR: JobState.WAITING,
    Outcome.TIMEOUT: JobState.WAITING,
    Outcome.NETWORK: JobState.WAITING,
    Outcome.BAD_RESPONSE: JobState.WAITING,
    Outcome.DOWNLOAD_FAILED: JobState.WAITING,
    Outcome.INVALID_REQUEST: JobState.FAILED,
    Outcome.MODERATION_BLOCKED: JobState.FAILED,
    Outcome.LOST: JobState.FAILED,
    # An interrupted call that may have been charged is held for the user to re-send.
    Outcome.INTERRUPTED: JobState.FAILED,
    # A bad key or an empty account stops the route; the job waits in the queue for a fix.
    Outcome.AUTH: JobState.QUEUED,
    Outcome.QUOTA_EXHAUSTED: JobState.QUEUED,
}


def test_every_failure_class_has_a_pinned_next_state() -> None:
    assert set(EXPECTED_STATE) == set(Outcome) - {Outcome.OK}


@pytest.mark.parametrize("outcome", sorted(EXPECTED_STATE))
def test_each_failure_class_leads_to_its_state(outcome: Outcome) -> None:
    v = judge(AttemptError(outcome, "boom"))
    assert v.outcome is outcome
    assert v.state is EXPECTED_STATE[outcome]
    assert (v.retry_at is not None) == (v.state is JobState.WAITING)
    assert (v.stop is not None) == outcome.stops_route
    assert (v.pause_s is not None) == (outcome is Outcome.RATE_LIMITED)
    # The route's charge policy is recorded as is; an unknown charge is not spent (yet).
    assert (v.charge_status, v.expected_usd, v.spent_usd) == (ChargeStatus.UNKNOWN, 0.04, 0.0)


@pytest.mark.parametrize("outcome", [Outcome.AUTH, Outcome.QUOTA_EXHAUSTED])
def test_route_stop_names_the_class_and_the_message(outcome: Outcome) -> None:
    v = judge(AttemptError(outcome, "invalid api key"))
    assert v.stop == f"{outcome.value}: invalid api key"
    assert v.retry_at is None


def test_a_request_that_never_left_costs_nothing_whatever_the_route_charges() -> None:
    v = judge(AttemptError(Outcome.NETWORK, "connect refused", sent=False), ChargeStatus.CHARGED)
    assert (v.charge_status, v.expected_usd, v.spent_usd) == (ChargeStatus.NOT_CHARGED, 0.0, 0.0)
    assert v.state is JobState.WAITING


def test_a_charged_failure_counts_as_spent() -> None:
    v = judge(AttemptError(Outcome.SERVER_ERROR, "500"), ChargeStatus.CHARGED)
    assert (v.charge_status, v.spent_usd) == (ChargeStatus.CHARGED, 0.04)


def test_interrupted_where_not_charged_goes_back_to_the_queue() -> None:
    v = judge(AttemptError(Outcome.INTERRUPTED, "run stopped"), ChargeStatus.NOT_CHARGED)
    assert v.state is JobState.QUEUED
    assert (v.retry_at, v.stop, v.pause_s) == (None, None, None)


@pytest.mark.parametrize("charge", [ChargeStatus.CHARGED, ChargeStatus.UNKNOWN])
def test_interrupted_that_may_be_charged_is_failed_not_resent(charge: ChargeStatus) -> None:
    v = judge(AttemptError(Outcome.INTERRUPTED, "run stopped"), charge)
    assert v.state is JobState.FAILED
    assert v.charge_status is charge
    assert v.retry_at is None


def test_interrupted_before_anything_left_goes_back_to_the_queue() -> None:
    error = AttemptError(Outcome.INTERRUPTED, "run stopped", sent=False)
    v = judge(error, ChargeStatus.CHARGED)
    assert (v.state, v.charge_status, v.expected_usd) == (
        JobState.QUEUED,
        ChargeStatus.NOT_CHARGED,
        0.0,
    )


def model_not_found() -> AttemptError:
    return AttemptError(
        Outcome.INVALID_REQUEST,
        "no available channel for model gpt-image-1",
        status=503,
        error_code="model_not_found",
    )


def test_model_not_found_for_the_routes_own_model_stops_the_route() -> None:
    v = judge(model_not_found(), own_model=True)
    assert v.stop == "model_not_found: no available channel for model gpt-image-1"
    assert v.state is JobState.QUEUED
    assert v.retry_at is None


def test_model_not_found_for_a_jobs_override_fails_only_that_job() -> None:
    v = judge(model_not_found(), own_model=False)
    assert v.stop is None
    assert v.state is JobState.FAILED


def test_retries_end_when_the_attempts_are_used_up() -> None:
    policy = RetryPolicy(max_attempts=3)
    error = AttemptError(Outcome.SERVER_ERROR, "500")
    assert judge(error, attempts=2, policy=policy).state is JobState.WAITING
    v = judge(error, attempts=3, policy=policy)
    assert (v.state, v.retry_at) == (JobState.FAILED, None)


def test_retries_end_at_the_deadline() -> None:
    policy = RetryPolicy(deadline=60.0)
    error = AttemptError(Outcome.TIMEOUT, "timed out", retry_after=5.0)
    early = judge(error, first=T0, now=T0 + timedelta(seconds=54), policy=policy)
    assert early.retry_at == T0 + timedelta(seconds=59)
    late = judge(error, first=T0, now=T0 + timedelta(seconds=56), policy=policy)
    assert (late.state, late.retry_at) == (JobState.FAILED, None)


def test_retry_after_sets_both_the_route_pause_and_the_jobs_next_try() -> None:
    v = judge(AttemptError(Outcome.RATE_LIMITED, "slow down", status=429, retry_after=12.0))
    assert v.pause_s == 12.0
    assert (v.state, v.retry_at) == (JobState.WAITING, T0 + timedelta(seconds=12))


def test_without_retry_after_a_429_pauses_for_the_policys_backoff() -> None:
    v = judge(AttemptError(Outcome.RATE_LIMITED, "slow down", status=429), attempts=3, seed=7)
    rng = random.Random(7)
    pause = POLICY.backoff(3, rng)
    assert v.pause_s == pause
    assert v.retry_at == T0 + timedelta(seconds=POLICY.backoff(3, rng))
    assert 2.0 <= pause <= 4.0


def test_a_zero_retry_after_counts_as_no_hint_for_the_pause() -> None:
    v = judge(AttemptError(Outcome.RATE_LIMITED, "429", retry_after=0.0), seed=1)
    assert v.pause_s == POLICY.backoff(1, random.Random(1))
    assert v.retry_at == T0


def test_scale_zero_retries_at_once() -> None:
    v = judge(AttemptError(Outcome.TIMEOUT, "timed out"), policy=RetryPolicy(scale=0.0))
    assert v.retry_at == T0
    assert v.state is JobState.WAITING


def test_a_retry_after_past_the_jobs_deadline_stops_the_route_saying_until_when() -> None:
    """``Retry-After: 86400`` with an hour's deadline: the route stops, the job stays queued."""
    v = judge(AttemptError(Outcome.RATE_LIMITED, "slow down", status=429, retry_after=86400.0))
    assert v.stop is not None
    assert v.stop.startswith("rate_limited: ")
    assert "until 2026-11-22 00:00:00 UTC" in v.stop
    assert (v.state, v.retry_at, v.pause_s) == (JobState.QUEUED, None, None)


def test_the_deadline_runs_from_the_jobs_first_attempt() -> None:
    """30 min left of the job's hour: a 40 min wait stops the route, a 20 min one pauses it."""
    now = T0 + timedelta(minutes=30)
    far = judge(AttemptError(Outcome.RATE_LIMITED, "429", retry_after=2400.0), now=now)
    assert far.stop is not None
    assert far.state is JobState.QUEUED
    near = judge(AttemptError(Outcome.RATE_LIMITED, "429", retry_after=1200.0), now=now)
    assert (near.stop, near.pause_s, near.state) == (None, 1200.0, JobState.WAITING)


def test_a_job_past_its_deadline_does_not_stop_the_route_for_a_short_wait() -> None:
    """Queued since an earlier run: a 1 s Retry-After pauses the route, the job fails as before."""
    error = AttemptError(Outcome.RATE_LIMITED, "429", status=429, retry_after=1.0)
    v = judge(error, now=T0 + timedelta(days=1))
    assert (v.stop, v.pause_s) == (None, 1.0)
    assert v.state is JobState.FAILED


def test_a_503_retry_after_pauses_the_route_or_stops_it_past_the_deadline() -> None:
    short = judge(AttemptError(Outcome.SERVER_ERROR, "maintenance", status=503, retry_after=30.0))
    assert (short.pause_s, short.pause_reason, short.stop) == (30.0, "503 Retry-After", None)
    assert short.state is JobState.WAITING
    day = judge(AttemptError(Outcome.SERVER_ERROR, "maintenance", status=503, retry_after=86400))
    assert day.stop is not None
    assert day.stop.startswith("server_error: ")
    assert day.state is JobState.QUEUED


def test_a_rate_limit_reset_hint_is_named_as_the_pauses_reason() -> None:
    limits = RateLimits(requests=Limit(limit=60, remaining=0, reset_s=6.0))
    error = AttemptError(
        Outcome.RATE_LIMITED, "429", status=429, retry_after=6.0, rate_limits=limits
    )
    assert (judge(error).pause_s, judge(error).pause_reason) == (6.0, "429 rate-limit reset")
    backoff = judge(AttemptError(Outcome.RATE_LIMITED, "429", status=429), seed=3)
    assert backoff.pause_reason == "429 backoff"


def test_a_wait_on_a_failure_of_one_job_only_neither_pauses_nor_stops_the_route() -> None:
    """A timeout carrying a hint: only the job's next try honours it."""
    v = judge(AttemptError(Outcome.TIMEOUT, "timed out", retry_after=86400.0))
    assert (v.stop, v.pause_s) == (None, None)
    assert v.state is JobState.FAILED


def test_a_gateway_timeouts_retry_after_past_the_deadline_stops_the_route() -> None:
    """A CDN's 504 is class ``timeout`` but came with a status: its Retry-After holds the route."""
    error = AttemptError(Outcome.TIMEOUT, "HTTP 504", status=504, retry_after=86400)
    v = judge(error)
    assert v.stop is not None
    assert "past the job's deadline" in v.stop
    assert v.retry_at is None
