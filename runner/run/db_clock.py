"""The database's clock on this process's clock: when a slot the database gave is due here.

A shared slot is a time on the database's clock. Read as "wait this long from when the answer
came", every slot was late by however long its answer took to reach the event loop, which
varies by milliseconds on a busy machine, and more than the whole allowance a strict limiter
leaves: four workers each a little late, by different amounts, sent requests closer than
their slots. So every answer carries the database's clock, and the offset between the two
clocks is taken from the quickest recent round trip (as NTP does): its answer is the one read
closest to when it was asked. A reading is placed at ``database time - offset``: off by at
most half that quickest round trip, either way, and by the same for every worker on one
network path. It is kept within the round trip it came in, so a clock that jumps misplaces
slots by at most that round trip until the samples from before the jump are gone.
"""

from __future__ import annotations

from collections import deque

#: Round trips the quickest is taken from: enough for one quick among slow ones.
SAMPLES_KEPT = 16
#: Seconds a sample counts for: the two clocks drift apart (parts per million) and may be
#: stepped, so an old quick round trip stops deciding.
SAMPLE_MAX_AGE_S = 30.0


class DatabaseClock:
    """Where readings of the database's clock fall on this process's clock."""

    def __init__(self) -> None:
        #: (round trip, database time minus our midpoint, our time) of recent answers.
        self._samples: deque[tuple[float, float, float]] = deque(maxlen=SAMPLES_KEPT)

    def local(self, asked: float, answered: float, theirs: float) -> float:
        """Our time when the database read ``theirs`` on its clock, in an answer to a
        statement sent at ``asked`` and answered at ``answered`` (our clock)."""
        while self._samples and self._samples[0][2] < answered - SAMPLE_MAX_AGE_S:
            self._samples.popleft()
        self._samples.append((answered - asked, theirs - (asked + answered) / 2, answered))
        _, offset, _ = min(self._samples)
        return min(max(theirs - offset, asked), answered)
