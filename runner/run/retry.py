"""When to try a failed job again: capped exponential backoff with jitter, or the server's word.

Modelled on stamina: an attempt limit *and* a deadline, ``Retry-After`` honoured, and a switch
(:attr:`RetryPolicy.scale`) that shrinks every wait for tests.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from runner.models import Outcome


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How often and how long a failed job is tried again.

    Attributes:
        max_attempts: attempts in all, the first included.
        deadline: seconds after the first attempt after which no retry is scheduled.
        base: the wait before the first retry, before jitter.
        cap: the longest wait, before jitter.
        scale: multiplies every wait (0 in tests that must not wait).
    """

    max_attempts: int = 5
    deadline: float = 3600.0
    base: float = 1.0
    cap: float = 60.0
    scale: float = 1.0

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Wait before retry number ``attempt`` (1-based) when the server gave no hint.

        Full-range jitter in [50 %, 100 %] of the capped exponential keeps a crowd of failed
        jobs from coming back in lockstep.
        """
        rng = rng or random.Random()
        wait = min(self.cap, self.base * 2.0 ** max(0, attempt - 1))
        return wait * rng.uniform(0.5, 1.0) * self.scale

    def next_try(
        self,
        *,
        outcome: Outcome,
        attempts: int,
        first_attempt_at: datetime,
        now: datetime,
        hint: float | None,
        rng: random.Random | None = None,
    ) -> datetime | None:
        """When to try again, or ``None`` when the job should fail now."""
        if not outcome.retryable or attempts >= self.max_attempts:
            return None
        wait = hint * self.scale if hint is not None else self.backoff(attempts, rng)
        at = now + timedelta(seconds=wait)
        if (at - first_attempt_at).total_seconds() > self.deadline:
            return None
        return at
