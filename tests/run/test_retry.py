"""The retry policy: capped jittered backoff, attempt limit, deadline, server hints."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from runner.models import Outcome
from runner.run.retry import RetryPolicy

T0 = datetime(2026, 11, 21, tzinfo=UTC)


def test_backoff_grows_exponentially_is_capped_and_jittered() -> None:
    policy = RetryPolicy(base=1.0, cap=8.0)
    rng = random.Random(7)
    waits = [policy.backoff(n, rng) for n in range(1, 8)]
    for n, wait in enumerate(waits, start=1):
        ceiling = min(8.0, 2.0 ** (n - 1))
        assert ceiling / 2 <= wait <= ceiling


def test_never_retried_classes_fail_at_once() -> None:
    policy = RetryPolicy()
    for outcome in (Outcome.INVALID_REQUEST, Outcome.MODERATION_BLOCKED, Outcome.AUTH):
        assert (
            policy.next_try(outcome=outcome, attempts=1, first_attempt_at=T0, now=T0, hint=None)
            is None
        )


def test_attempt_limit_and_deadline_stop_retries() -> None:
    policy = RetryPolicy(max_attempts=3, deadline=60)
    kw = {"outcome": Outcome.SERVER_ERROR, "first_attempt_at": T0, "hint": None}
    assert policy.next_try(attempts=2, now=T0, **kw) is not None
    assert policy.next_try(attempts=3, now=T0, **kw) is None
    late = T0 + timedelta(seconds=59)
    assert policy.next_try(attempts=1, now=late, **kw | {"hint": 5.0}) is None


def test_server_hint_is_used_and_scale_turns_waits_off() -> None:
    policy = RetryPolicy()
    at = policy.next_try(
        outcome=Outcome.RATE_LIMITED, attempts=1, first_attempt_at=T0, now=T0, hint=12.0
    )
    assert at == T0 + timedelta(seconds=12)
    quick = RetryPolicy(scale=0.0)
    assert (
        quick.next_try(outcome=Outcome.TIMEOUT, attempts=1, first_attempt_at=T0, now=T0, hint=None)
        == T0
    )
