"""Where the database's clock falls on ours: the slots the shared schedule gives are on it."""

from __future__ import annotations

import pytest

from runner.run.db_clock import SAMPLE_MAX_AGE_S, SAMPLES_KEPT, DatabaseClock

#: The database's clock runs this far ahead of ours in these tests.
AHEAD = 1_000_000.0


def test_a_slow_answer_is_placed_by_the_quickest_round_trip_not_by_its_arrival() -> None:
    """An answer that took 20 ms to reach us was read by the database when a quick one would
    place it (here 1 ms after it was asked), not on arrival: reckoned from arrival, its slot
    would be 19 ms late, and the next worker's request, on time, 19 ms too close."""
    clock = DatabaseClock()
    # A quick round trip: asked at 10.000, read at 10.0005, answered at 10.001.
    assert clock.local(10.000, 10.001, 10.0005 + AHEAD) == pytest.approx(10.0005, abs=1e-6)
    # A slow one: read 1 ms after it was asked, the answer 19 ms on its way back.
    assert clock.local(20.000, 20.020, 20.001 + AHEAD) == pytest.approx(20.001, abs=1e-6)


def test_a_reading_stays_within_its_own_round_trip_when_the_clock_jumps() -> None:
    """A database clock stepped by a second (an NTP step, a failover to another host) costs
    no more than the round trip it was seen in, however the offset learned before says."""
    clock = DatabaseClock()
    clock.local(10.000, 10.001, 10.0005 + AHEAD)
    assert clock.local(20.000, 20.010, 21.005 + AHEAD) == 20.010
    assert clock.local(30.000, 30.010, 29.005 + AHEAD) == 30.000


def test_the_offset_follows_the_recent_round_trips_only() -> None:
    """A quick answer long gone no longer decides: the clocks drift and may be stepped."""
    clock = DatabaseClock()
    clock.local(10.000, 10.0002, 10.0001 + AHEAD)  # quick, with the old offset
    for i in range(SAMPLES_KEPT):
        at = 100.0 + i
        clock.local(at, at + 0.004, at + 0.002 + AHEAD + 0.5)  # the clock moved on by 0.5 s
    assert clock.local(200.0, 200.004, 200.002 + AHEAD + 0.5) == pytest.approx(200.002, abs=1e-6)


def test_a_quick_answer_half_a_minute_old_no_longer_decides() -> None:
    """On a slow route sixteen answers span minutes: samples count for SAMPLE_MAX_AGE_S."""
    clock = DatabaseClock()
    clock.local(10.000, 10.0002, 10.0001 + AHEAD)  # quick, with the old offset
    later = 10.0 + SAMPLE_MAX_AGE_S + 1.0
    placed = clock.local(later, later + 0.004, later + 0.002 + AHEAD + 0.5)
    assert placed == pytest.approx(later + 0.002, abs=1e-6)
