"""Per-route admission: an adaptive request pace, a shared pause after 429s, and a stop switch.

Hold the rate limiter only around sending a request, never around a backoff sleep.

:class:`BaseGate` keeps what every gate does alike (the pace learned from answers, the pause
this process has seen, the stop switch); :class:`RouteGate` takes its slots from a schedule in
this process, and :class:`runner.run.shared_gate.SharedGate` from a schedule in the database.
Requests are spread evenly, one interval apart, never sent in bursts: a limiter that allows
none refuses every request of a burst but the first.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from contextvars import ContextVar
from dataclasses import replace
from typing import Protocol

import anyio

from runner.errors import StoreUnavailable
from runner.run.pace_keeper import PaceKeeper
from runner.run.pace_state import Observation, Reason
from runner.run.pacing import Pace

#: The share of the configured rate the pace may reach (arrival times that jitter are allowed
#: for on the wire: see WIRE_JITTER_S).
RATE_MARGIN = 1.0
#: Two requests this process sends leave at least this share of an interval apart, measured
#: from when the one before really left (after its ledger row), not from when it was let go.
DEPART_SHARE = 1.0
#: The first requests of a run open new connections, which delivers them late at times: those
#: leave this much more than an interval apart.
WARM_UP_SHARE = 1.1
WARM_UP_REQUESTS = 8
#: Requests closer than this are not spaced on the wire one by one (see ``depart``).
SPACED_GAP_S = 0.005
#: How long a request whose ledger row is still being written holds the next one's departure
#: at most (seconds): a row that stalls (a loaded machine) is waited for, one whose task
#: never says it left or will not (cancelled, the store away) holds nothing past this.
PENDING_HELD_S = 2.0
#: How many recent row writes the shortest one is taken from (what a departure allows for).
LEADS_KEPT = 16
#: What a request may take longer than the one before it to reach the server once it left
#: (the event loops of both ends): requests leave at least this much more than an interval
#: apart. Measured from one process to a server on the same loaded machine, the later of two
#: requests gained more than 3 ms on the one before in 4.6% of pairs, more than 10 ms in 2.0%,
#: more than 20 ms in 0.7%; a departure's own lateness (it never leaves before it is due)
#: covers part of the rest. Absolute, since it does not grow with the interval; but at most
#: JITTER_SHARE of an interval (10 ms is 2% at 120 requests a minute), so a fast route keeps
#: most of its rate.
WIRE_JITTER_S = 0.010
JITTER_SHARE = 0.02


def jitter_allowance(interval: float, seconds: float = WIRE_JITTER_S) -> float:
    """What is added to ``interval`` for arrival times that jitter by up to ``seconds``."""
    return min(seconds, interval * JITTER_SHARE)


#: When the request this task is sending departed (``None``: it has left, or none departed):
#: an attempt departs and says it has left in one task.
_DEPARTED: ContextVar[float | None] = ContextVar("departed", default=None)
#: When this task's slot was taken (its interval chosen), and how far apart from the one
#: before it the slot keeps the request (the interval and the allowance for late arrivals):
#: a 429 of a request booked before a backoff belongs to its episode, and its wait is counted
#: from that spacing. An attempt is admitted and answered in one task.
_BOOKED: ContextVar[tuple[float, float] | None] = ContextVar("booked", default=None)

#: The learned pace is written to the store at most this often (seconds), but for a backoff.
SAVE_EVERY_S = 1.0
#: Loads and saves of the pace at most, when other workers save theirs in between.
SAVE_TRIES = 3


class Gate(Protocol):
    """Admission control for one route: :class:`RouteGate` in one process, or
    :class:`runner.run.shared_gate.SharedGate` across every worker sharing a PostgreSQL database.
    """

    rpm: int
    stopped: str | None
    pace: Pace

    @property
    def paused_for(self) -> float:
        """Seconds left of the longest pause this process knows of."""

    async def start(self) -> None:
        """Load the route's learned pace and prepare shared state."""

    async def admit(self, images: int = 1) -> None:
        """Wait out any pause, then take one request's slot (``images`` against an image limit)."""

    async def pause(self, seconds: float) -> None:
        """Hold every request on the route for ``seconds`` (a 429's ``Retry-After``)."""

    async def depart(self) -> None:
        """Hold an admitted request until one interval after the last one this process sent
        left (the ledger row written between departure and sending takes varying time); a
        request still writing its row leaves no sooner than now, and this one's row is
        reckoned to take the shortest recent row write, so rows that take longer than an
        interval are written side by side."""

    async def leave(self) -> None:
        """The ledger row of the request this task departed is written: return when the
        request may leave (at once, or at its slot's time on a shared schedule), noting
        that it does. A stop ends the wait: the caller then sends nothing (see
        :attr:`stopped`). Not cancelled out of: the row is written."""

    def unsent(self) -> None:
        """Say that the request this task departed will not leave (its lease was lost, the
        route stopped)."""

    async def observe(self, seen: Observation) -> None:
        """Let an attempt's answer (its status, its rate-limit headers) adjust the pace."""

    def stop(self, reason: str) -> None:
        """Stop the route for this run (bad key, no quota): nothing more is sent."""


class BaseGate(ABC):
    """The pace, pause and stop switch every gate keeps; subclasses say how slots are taken.

    Args:
        rpm: requests per minute allowed on the route: the pace's ceiling.
        told: the user gave ``rpm`` (the pace starts there, else it starts low and probes).
        keeper: where the learned pace is kept between runs (``None``: nowhere).
    """

    def __init__(self, rpm: int, *, told: bool = True, keeper: PaceKeeper | None = None) -> None:
        self.rpm = rpm
        self.stopped: str | None = None
        self.pace = Pace(rpm * RATE_MARGIN, told=told)
        self._told = told
        self._keeper = keeper
        self._saved_at = -SAVE_EVERY_S
        self._dirty = False
        self._paused_until = 0.0
        self._departed_at = -1e9
        self._departed = 0
        #: When the last request to depart did, while it has not left yet (``None``: it has,
        #: or it never will).
        self._pending: float | None = None
        #: When the request that left last left (after its ledger row).
        self._sent_at = -1e9
        #: Seconds from recent departures to their requests leaving (the ledger row).
        self._leads: deque[float] = deque(maxlen=LEADS_KEPT)
        #: A 429 came on the route this run: no more bursts on it.
        self.refused = False
        # Uncontended, taken without a trip through the event loop (see ``_sleep``).
        self._slots = anyio.Lock(fast_acquire=True)
        self._departing = anyio.Lock(fast_acquire=True)
        self._gap = self.pace.interval()
        self._stopping: anyio.Event | None = None

    async def start(self) -> None:
        if self._keeper is None:
            return
        # The row first: the learned pace lives in it.
        await self._keeper.store.ensure_route_state(self._keeper.route)
        if (found := await self._keeper.load()) is not None:
            self.pace.adopt(replace(found[0], reason=Reason.LEARNED))
            self._keeper.seq = self._keeper.found_seq

    @property
    def paused_for(self) -> float:
        """Seconds left of the longest pause this process knows of."""
        return max(0.0, self._paused_until - anyio.current_time())

    def stop(self, reason: str) -> None:
        if self.stopped is None:
            self.stopped = reason
            if self._stopping is not None:
                self._stopping.set()

    async def _sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the route stops meanwhile: a request waiting out a
        pause or its slot learns of a stop (a revoked key, an empty account) at once.

        Nothing to wait (a slot already due): no trip through the event loop either. Slots
        are taken under a lock, and a trip each would admit one request per turn of the
        loop, however fast the route may go."""
        if self.stopped is not None or seconds <= 0:
            return
        if self._stopping is None:
            self._stopping = anyio.Event()
        with anyio.move_on_after(seconds):
            await self._stopping.wait()

    async def pause(self, seconds: float) -> None:
        # This process holds at once; sharing the pause further is the subclass's business.
        self._hold(seconds)
        await self._share_pause(seconds)

    async def admit(self, images: int = 1) -> None:
        await self._wait_out_pause()
        # One request at a time takes its slot, at the pace of the moment: a slot booked
        # ahead at an older, faster pace would still leave after the pace has slowed.
        if not self._one_at_a_time:
            self._choose_interval(images)
            await self._take_slot(self._gap)
            return
        async with self._slots:
            self._choose_interval(images)
            await self._take_slot(self._gap)

    def _choose_interval(self, images: int) -> None:
        """Choose this request's interval at the pace of the moment, and note it (_BOOKED)."""
        self._gap = self.pace.interval(images)
        _BOOKED.set((anyio.current_time(), self._gap + self._allowance(self._gap)))

    def _allowance(self, interval: float) -> float:
        """What requests are kept further apart than ``interval`` for late arrivals."""
        share = DEPART_SHARE if self._departed >= WARM_UP_REQUESTS else WARM_UP_SHARE
        return interval * (share - 1) + jitter_allowance(interval) + self.pace.spacing

    @property
    def _one_at_a_time(self) -> bool:
        """Whether requests take their slots one by one (else all at once, booked ahead)."""
        return True

    async def depart(self) -> None:
        # Spaced from when the request before really left: its ledger row takes varying time
        # after its departure, and a limiter that allows no burst refuses a request that
        # arrives a hair early. A request whose row is still being written leaves no sooner
        # than now, and at least the shortest recent row write after its departure, and this
        # one's row is reckoned to take that long too: rows that take longer than an
        # interval are written side by side, and a row that stalls holds the next departure
        # until it has left. One that never leaves (its lease lost, the route stopped) holds
        # nothing once it says so.
        # One at a time: two requests whose slots came together would otherwise both leave one
        # interval after the one before, together.
        if (mine := _DEPARTED.get()) is not None:
            self._forget(mine)  # this task's request before never left
        if self._gap < SPACED_GAP_S:
            # Faster than an event loop can space requests: the schedule alone paces them.
            self._departing_now()
            return
        async with self._departing:
            # Again after each wait: the request before may have left later than reckoned.
            while (wait := self._departure_due() - anyio.current_time()) > 0:
                await self._sleep(wait)
                if self.stopped is not None:
                    break
            self._departing_now()

    def _departure_due(self) -> float:
        """When the next request may depart: an interval (and the jitter allowance) after the
        request before it left, less the row write still to come for this one."""
        lead = self._lead()
        left = max(self._sent_at, self._departed_at + lead)
        now = anyio.current_time()
        if self._pending is not None and now - self._pending > self._usual_lead():
            # Its row has taken longer than rows do: it has stalled (an event loop or a
            # commit held up) and has not left, so it leaves no sooner than now. Reckoned to
            # leave the shortest row write after its departure, it let the next one depart,
            # and both arrived together. A row within the usual spread is not waited for:
            # where rows take longer than an interval, waiting for each one would send a
            # request per row write, not per interval. It is waited for at most
            # PENDING_HELD_S (or an interval), in case it never says.
            held = max(PENDING_HELD_S, self._gap)
            left = max(left, min(now, self._pending + lead + held))
        return left + self._gap + self._allowance(self._gap) - lead

    def _usual_lead(self) -> float:
        """How long a row write may take and not count as stalled: the longest recent one
        but one (none until a few are known: then any row still being written has)."""
        if len(self._leads) < LEADS_KEPT // 4:
            return 0.0
        return sorted(self._leads)[-2]

    def _lead(self) -> float:
        """The shortest recent time from a departure to its ledger row being written:
        none until a few are known, since the first row writes of a run are the slowest."""
        return min(self._leads) if len(self._leads) >= LEADS_KEPT // 4 else 0.0

    def _departing_now(self) -> None:
        """Note that a request departs now (its ledger row is written next, in this task)."""
        self._departed_at = anyio.current_time()
        self._pending = self._departed_at
        self._departed += 1
        _DEPARTED.set(self._departed_at)

    async def leave(self) -> None:
        self._left(anyio.current_time())

    def _left(self, written: float) -> None:
        """This task's request leaves now; its ledger row was written at ``written``."""
        # This task's own departure: rows written side by side finish in any order.
        if (departed := _DEPARTED.get()) is not None:
            self._leads.append(max(0.0, written - departed))
            self._forget(departed)
        self._sent_at = max(self._sent_at, anyio.current_time())

    def unsent(self) -> None:
        if (departed := _DEPARTED.get()) is not None:
            self._forget(departed)

    def _forget(self, departed: float) -> None:
        """The request of this task that departed at ``departed`` is no longer on its way."""
        _DEPARTED.set(None)
        if self._pending == departed:
            self._pending = None

    async def observe(self, seen: Observation) -> None:
        if seen.booked_at is None and (booked := _BOOKED.get()) is not None:
            seen = replace(seen, booked_at=booked[0], spaced_s=booked[1])
        self.refused |= seen.rate_limited
        backoff = self.pace.learned.backoff
        self._dirty |= self.pace.observe(seen)
        now = anyio.current_time()
        # A backoff is kept at once (other workers slow down with it); the rest once a second.
        urgent = self.pace.learned.backoff != backoff
        if self._keeper is None or (now - self._saved_at < SAVE_EVERY_S and not urgent):
            return
        self._saved_at = now
        try:
            for _ in range(SAVE_TRIES):
                await self._refresh(self._keeper)
                if not self._dirty or await self._keeper.save(self.pace.learned):
                    self._dirty = False
                    return
        except StoreUnavailable:
            return  # the pace is an optimisation: it never costs an answer its image

    async def _refresh(self, keeper: PaceKeeper) -> None:
        """Take up what another worker saved (only :class:`SharedGate` shares the pace); here,
        once another process saved over this one's, save over it in turn, as before."""
        if keeper.conflict:
            await keeper.load()
            keeper.seq = keeper.found_seq
            keeper.conflict = False

    def _hold(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, anyio.current_time() + seconds)

    async def _wait_out_pause(self) -> None:
        # Another 429 may extend the pause while we sleep, hence a loop rather than an event.
        while (wait := self.paused_for) > 0 and self.stopped is None:
            await self._sleep(wait)

    @abstractmethod
    async def _share_pause(self, seconds: float) -> None:
        """Tell the route's other users of a pause this process has already taken."""

    @abstractmethod
    async def _take_slot(self, interval: float) -> None:
        """Take one request's slot, ``interval`` seconds after the last; return when it may
        leave."""


class RouteGate(BaseGate):
    """Admission control for one route within this process.

    A GCRA schedule: each request is due one interval after the one before it (or now, if the
    route was idle), so requests leave evenly spaced whatever the pace is at the moment.
    """

    def __init__(self, rpm: int, *, told: bool = True, keeper: PaceKeeper | None = None) -> None:
        super().__init__(rpm, told=told, keeper=keeper)
        self._next_at = 0.0

    async def _share_pause(self, seconds: float) -> None:
        # Nobody else admits through this gate; the schedule resumes when the pause ends.
        self._next_at = max(self._next_at, anyio.current_time() + seconds)

    async def _take_slot(self, interval: float) -> None:
        while True:
            now = anyio.current_time()
            due = max(self._next_at, now)
            self._next_at = due + interval
            await self._sleep(due - now)
            if self.paused_for <= 0 or self.stopped is not None:
                return
            # A 429 seen while waiting holds this request too; it then takes a slot after the
            # pause, so the requests held do not all leave at once when it ends.
            await self._wait_out_pause()
            self._next_at = anyio.current_time()
