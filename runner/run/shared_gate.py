"""The route gate shared through the database, for several worker processes (PostgreSQL).

Same contract as :class:`runner.run.gate.RouteGate`, but the request schedule, the 429 pause
and the learned pace live in the store (``route_state``), so N workers together stay under
the route's rate and pace it alike: what one worker learns, the others take up within a
second or so.
"""

from __future__ import annotations

import contextlib
from collections import deque
from contextvars import ContextVar

import anyio

from runner.errors import StoreUnavailable
from runner.run.db_clock import DatabaseClock
from runner.run.gate import LEADS_KEPT, BaseGate, jitter_allowance
from runner.run.pace_keeper import PACE_MAX_AGE_S, PaceKeeper, PaceStore
from runner.run.pace_state import Learned, Observation
from runner.run.pacing import GOODPUT_MIN_OK, GOODPUT_MIN_S, GOODPUT_WINDOW_S

#: What the requests of two workers, one slot apart, may differ by on their way from the
#: schedule to the server (the slot's answer, the sleep, the ledger row, the event loops):
#: slots are at least this much longer than an interval (at most a small share of it: see
#: :func:`runner.run.gate.jitter_allowance`), more when requests are seen leaving late for
#: their slots (see LATENESS_KEPT). Never a slot early: a limiter that allows no burst
#: refuses a request that arrives a hair before its interval is up.
SLOT_JITTER_S = 0.006
#: Until a 429, the tasks of a worker book slots ahead, up to this many seconds of them: the
#: schedule stays full however its event loop stalls, and a pace that turns out too fast
#: (the first answer's headers teach a slower one) sends at most that much at it. Once the
#: route's schedule is booked further ahead than this (the other workers' slots), a worker
#: books one at a time: four workers booking a quarter second each had 2.4 s of slots
#: booked at three times the limit when the first 429 came, and sent them all.
BOOK_AHEAD_S = 0.25
#: How far past the slot's time this worker's requests left lately (the wake-up for the slot
#: and the ledger row take varying time, more so on a busy machine) widens every slot by the
#: spread seen, once the route has refused a request: two workers' requests one slot apart
#: arrive that much closer than a slot at times. Taken over this many recent requests, the
#: longest left out (one stall is not the spread), and at most MAX_SLOT_JITTER_SHARE of an
#: interval.
LATENESS_KEPT = 32
MAX_SLOT_JITTER_SHARE = 0.1
#: What a slot allows beyond an interval until this worker's ledger rows are known.
WARM_UP_JITTER_SHARE = 0.2
#: Seconds at most a request's ledger row is written before its slot's time (the request
#: then waits for it): a process killed in that wait leaves a row judged ``unknown`` for a
#: request that never left, as one killed while it is sent would.
ROW_EARLY_MAX_S = 0.05

#: A 429's wait holds every worker at once for at most this long (seconds): while the pace is
#: saved (a few round trips). The verdict on the attempt then pauses the route for the whole
#: wait, or stops it without a pause when the wait ends past the job's deadline: shared whole
#: from here, such a wait held every other worker, and every later run on the database, for
#: all of it (up to a year), never sending, so never told of the stop.
PAUSE_AHEAD_S = 2.0

#: When the slot this task took is due (this process's clock; ``None``: no slot taken).
_SLOT_DUE: ContextVar[float | None] = ContextVar("slot_due", default=None)


class SharedGate(BaseGate):
    """Admission for one route across every worker using the same database.

    Args:
        store: the shared store.
        route: the route's name (its ``route_state`` row).
        rpm: requests per minute for the route as a whole: the pace's ceiling.
        told: the user gave ``rpm`` (else the pace starts low and probes upward).
    """

    def __init__(self, store: PaceStore, route: str, rpm: int, *, told: bool = True) -> None:
        super().__init__(rpm, told=told, keeper=PaceKeeper(store, route))
        self._store = store
        self._route = route
        #: Tasks of this worker holding a slot booked ahead.
        self._ahead = 0
        #: This worker's successes not yet added to the route's count.
        self._passed = 0
        #: Seconds after their slots' times that recent requests left.
        self._lateness: deque[float] = deque(maxlen=LATENESS_KEPT)
        #: The route's schedule was booked more than BOOK_AHEAD_S ahead at the last slot.
        self._booked_ahead = False
        #: (when, the route's count of successes) each time this worker added its own, on
        #: the clock of the answers (when the last one came).
        self._route_counts: deque[tuple[float, int]] = deque()
        self._seen_at: float | None = None
        self.pace.route_rate = self._route_rate
        #: Where the database's answers fall on our clock (the slots are on its clock).
        self._db_clock = DatabaseClock()

    @property
    def _one_at_a_time(self) -> bool:
        # Until a 429, slots booked ahead let every task of every worker keep the schedule
        # full; after it, the pace may change under them, so they book one by one.
        if self.refused or self._booked_ahead:
            return True
        return self._ahead >= max(1, BOOK_AHEAD_S / self._gap)

    async def depart(self) -> None:
        # The shared schedule alone spaces requests: held further to keep this process's own
        # requests an interval apart, they left late for their slots (a median 0.1 s, up to
        # an interval and more, under load), onto the next worker's slot.
        self._departing_now()

    async def leave(self) -> None:
        written = anyio.current_time()
        due = _SLOT_DUE.get()
        if due is not None and due > written:
            # Its row was started early enough for a slow write (see ``_row_lead``): it
            # leaves at its slot's time, not whenever the write happened to end. Shielded:
            # its row is written, and only its caller can close it; a stop ends the wait
            # (the caller then closes the row as not sent).
            with anyio.CancelScope(shield=True):
                await self._sleep(min(due - written, ROW_EARLY_MAX_S))
        self._left(written)
        if due is not None:
            self._lateness.append(anyio.current_time() - due)
            _SLOT_DUE.set(None)

    def _row_lead(self) -> float:
        """How long before its slot's time a request's ledger row is started: twice the
        longest recent row write (ROW_EARLY_MAX_S until a few are known, and at most that),
        so that nearly every request leaves on its slot's time. Started the shortest write
        before it, every write that took longer made its request late by the difference
        (5-15 ms for one row in twenty on a busy machine), and the next worker's request, on
        time, came that much too soon for a limiter that allows no burst; started the
        longest write but one before it, the one in a hundred that took longer still did."""
        if len(self._leads) < LEADS_KEPT // 4:
            return ROW_EARLY_MAX_S
        return min(2 * max(self._leads), ROW_EARLY_MAX_S)

    def _allowance(self, interval: float) -> float:
        """What a slot allows beyond ``interval`` for requests leaving late for their slots."""
        least = jitter_allowance(interval, SLOT_JITTER_S) + self.pace.spacing
        if len(self._leads) < LEADS_KEPT // 4:
            # A worker's first requests open connections and write its first ledger rows
            # (the slowest), and leave late for their slots by up to a fifth of an interval:
            # the next worker's then arrived that much too soon for a limiter that allows no
            # burst (four workers told the rate had 4-5 429s in their first 6 s, and backed
            # off four times).
            return max(least, interval * WARM_UP_JITTER_SHARE)
        # Until a 429 the limiter takes the jitter as it comes (a bucket, a window): none of
        # the rate is spent on it.
        if not self.refused or len(self._lateness) < LATENESS_KEPT // 4:
            return least
        seen = sorted(self._lateness)
        spread = seen[-2] - seen[0]
        return min(max(least, spread), interval * MAX_SLOT_JITTER_SHARE)

    async def _share_pause(self, seconds: float) -> None:
        # The others learn of it from their next slot request.
        # Past the database's outage limit this process holds the pause all the same, and the
        # answer that brought it is still recorded.
        with contextlib.suppress(StoreUnavailable):
            await self._store.pause_route(self._route, seconds)

    async def observe(self, seen: Observation) -> None:
        if not seen.rate_limited and seen.sent_at is not None:
            self._passed += 1
        self._seen_at = seen.at
        if seen.rate_limited and seen.retry_after:
            # The wait a 429 asks for holds every worker before the pace is saved (a few
            # round trips): requests sent meanwhile would be refused as well. The attempt's
            # verdict pauses the route for the rest of it, or stops the route.
            await self.pause(min(seen.retry_after, PAUSE_AHEAD_S))
        await super().observe(seen)

    async def _refresh(self, keeper: PaceKeeper) -> None:
        found = await keeper.load()
        if found is not None and keeper.newer:
            self._take_up(found[0], keeper)
        await self._count_passed()

    def _take_up(self, theirs: Learned, keeper: PaceKeeper) -> None:
        """One pace for the route: take up the one saved since this worker's, unless this
        worker backed off to a slower one since (a 429 the saver had not seen), which is then
        saved over it. Each worker keeping a pace of its own and taking up only the others'
        backoffs, the paces parted (60-175 a minute at once, four workers told 3x on a strict
        limiter), and the fast ones' requests were refused after the slow ones'."""
        mine = self.pace.learned
        own_backoff = self._dirty and mine.backoff not in (None, keeper.backoff)
        keeper.seq = keeper.found_seq
        if own_backoff and mine.rpm < theirs.rpm:
            # How far apart the limiter wants arrivals is the route's, whoever was refused.
            self.pace.space_out(theirs.spacing_s)
            return
        self.pace.adopt(theirs, at=anyio.current_time())
        keeper.backoff = theirs.backoff
        self._dirty = False

    async def _count_passed(self) -> None:
        """Add this worker's successes to the route's count, and note the count: a 429
        without headers backs off to the rate the route as a whole let through, not the rate
        this worker's share did (a quarter of it, with four workers)."""
        passed, self._passed = self._passed, 0
        try:
            route = await self._store.count_passed(self._route, passed)
        except StoreUnavailable:
            self._passed += passed
            raise
        at = anyio.current_time() if self._seen_at is None else self._seen_at
        self._route_counts.append((at, route))
        while len(self._route_counts) > 2 and self._route_counts[1][0] < at - 2 * GOODPUT_WINDOW_S:
            self._route_counts.popleft()

    def _route_rate(self, since: float) -> float | None:
        """The route's successes a minute (every worker's) from the first count after
        ``since`` to the last, or ``None`` while that covers too little. Judged from this
        worker's share of the count instead, a worker knew it only after 5 answers of its own
        (10 s and more, four workers at the limit), and a share misjudged early (2.5 of four
        workers) backed the route off to 0.7 of what it let through."""
        counts = [(at, count) for at, count in self._route_counts if at >= since]
        if len(counts) < 2:
            return None
        (first, then), (last, now) = counts[0], counts[-1]
        if last - first < GOODPUT_MIN_S or now - then < GOODPUT_MIN_OK:
            return None
        return (now - then) * 60.0 / (last - first)

    async def _take_slot(self, interval: float) -> None:
        # Counted from before the slot is asked for: tasks that book ahead do so at once.
        self._ahead += 1
        try:
            await self._book(interval)
        finally:
            self._ahead -= 1

    async def _book(self, interval: float) -> None:
        while True:
            # The margin for late arrivals goes on top of the route's saved pace too, when
            # that is the slower one: kept to exactly, the workers' successes came a hair
            # faster than the limit they had learned.
            slot = await self._store.take_rate_slot(
                self._route,
                interval,
                paced_within=PACE_MAX_AGE_S,
                allowance=self._allowance(interval),
            )
            if slot.paused <= 0:
                self._booked_ahead = slot.wait > BOOK_AHEAD_S
                due = self._db_clock.local(slot.asked, slot.answered, slot.clock) + slot.wait
                _SLOT_DUE.set(due)
                await self._sleep(due - self._row_lead() - anyio.current_time())
                if self.paused_for <= 0 or self.stopped is not None:
                    return
                # A 429 this worker saw while waiting holds this request too: it books
                # again after the pause.
                _SLOT_DUE.set(None)
            else:
                self.refused = True
                # Another worker saw a 429: the slot was not taken; come back when it ends.
                self._hold(slot.paused)
            await self._wait_out_pause()
            if self.stopped is not None:
                return
