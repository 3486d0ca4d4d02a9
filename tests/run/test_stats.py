"""Run statistics: every counter follows from the settled-job records and in-flight attempts."""

from __future__ import annotations

import pytest

from runner.models import JobState, Outcome
from runner.run.stats import JobSettled, RoutePause, RunStats


def test_each_next_state_lands_in_its_counter() -> None:
    stats = RunStats()
    for state in (
        JobState.SUCCEEDED,
        JobState.SUCCEEDED,
        JobState.FAILED,
        JobState.WAITING,
        JobState.QUEUED,
    ):
        stats.record(JobSettled(route="r", state=state))
    assert (stats.succeeded, stats.failed, stats.retries_scheduled, stats.released) == (2, 1, 1, 1)
    assert stats.finished == 3
    assert stats.outcomes == {}


def test_outcomes_and_spend_are_counted_only_for_attempts_made() -> None:
    stats = RunStats()
    stats.record(
        JobSettled(route="r", state=JobState.SUCCEEDED, outcome=Outcome.OK, spent_usd=0.04)
    )
    stats.record(
        JobSettled(route="r", state=JobState.WAITING, outcome=Outcome.SERVER_ERROR, spent_usd=0.01)
    )
    stats.record(JobSettled(route="r", state=JobState.WAITING, outcome=Outcome.SERVER_ERROR))
    stats.record(JobSettled(route="r", state=JobState.FAILED))  # could not be built: no request
    assert stats.outcomes == {"ok": 1, "server_error": 2}
    assert stats.spent_usd == pytest.approx(0.05)
    assert stats.failed == 1


def test_the_first_reason_a_route_stopped_for_is_kept() -> None:
    stats = RunStats()
    for reason in ("auth: bad key", "quota_exhausted: empty"):
        stats.record(
            JobSettled(route="a", state=JobState.QUEUED, outcome=Outcome.AUTH, route_stopped=reason)
        )
    stats.record(JobSettled(route="b", state=JobState.QUEUED, outcome=Outcome.INTERRUPTED))
    assert stats.stopped_routes == {"a": "auth: bad key"}
    assert stats.released == 3


def test_an_attempt_is_in_flight_until_its_block_ends_however_it_ends() -> None:
    stats = RunStats()
    with stats.attempt():
        assert (stats.attempts, stats.in_flight) == (1, 1)
        with stats.attempt():
            assert (stats.attempts, stats.in_flight) == (2, 2)
    assert (stats.attempts, stats.in_flight) == (2, 0)
    with pytest.raises(RuntimeError), stats.attempt():
        raise RuntimeError("cancelled")
    assert (stats.attempts, stats.in_flight) == (3, 0)


def test_a_job_sent_back_for_want_of_budget_says_why_the_run_stops_claiming() -> None:
    stats = RunStats()
    stats.record(JobSettled(route="r", state=JobState.QUEUED))
    assert stats.budget_stop is None
    stats.record(JobSettled(route="r", state=JobState.QUEUED, budget_stop="budget reached: $1"))
    assert (stats.budget_stop, stats.released) == ("budget reached: $1", 2)


def test_each_route_keeps_the_pause_that_ends_last_and_its_reason() -> None:
    stats = RunStats()
    for route, until, reason in (
        ("a", 50.0, "429 Retry-After"),
        ("a", 20.0, "429 backoff"),  # ends sooner: the longer pause still holds the route
        ("b", 10.0, "503 Retry-After"),
        ("b", 30.0, "429 rate-limit reset"),
    ):
        pause = RoutePause(until=until, reason=reason)
        stats.record(JobSettled(route=route, state=JobState.WAITING, paused=pause))
    assert stats.pauses == {
        "a": RoutePause(until=50.0, reason="429 Retry-After"),
        "b": RoutePause(until=30.0, reason="429 rate-limit reset"),
    }
    assert stats.pauses["a"].left(45.0) == 5.0
    assert stats.pauses["a"].left(60.0) == 0.0
    assert stats.retries_scheduled == 4
