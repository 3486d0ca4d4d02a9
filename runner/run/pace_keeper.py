"""Where a route's learned pace is kept between requests, workers and runs: the store's
``route_state`` row, saved over the version a gate works from (compare and set)."""

from __future__ import annotations

import uuid
from typing import Protocol

from runner.abc import RoutePace, RouteState
from runner.run.pace_state import Learned

#: A learned pace older than this is not used by the next run (seconds).
PACE_MAX_AGE_S = 24 * 3600.0


class PaceStore(RouteState, RoutePace, Protocol):
    """What keeping a route's pace needs of the store."""


class PaceKeeper:
    """Where a gate keeps its route's learned pace: the store's ``route_state`` row.

    Args:
        store: the store holding route state.
        route: the route's name.
    """

    def __init__(self, store: PaceStore, route: str) -> None:
        self.store = store
        self.route = route
        #: Tells this gate's saves from other workers'.
        self.token = uuid.uuid4().hex
        #: The version of the saved pace this gate last loaded or saved, and the last loaded.
        self.seq = 0
        self.found_seq = 0
        #: The last save found another's saved meanwhile.
        self.conflict = False
        #: The backoff named in the pace last saved or taken up here.
        self.backoff: str | None = None

    async def load(self) -> tuple[Learned, bool] | None:
        """The saved pace and whether another gate saved it, or ``None``."""
        data = await self.store.load_pace(self.route, PACE_MAX_AGE_S)
        if data is None:
            return None
        self.found_seq = int(data.get("seq", 0))
        return Learned.from_json(data), data.get("by") != self.token

    @property
    def newer(self) -> bool:
        """Whether the pace last loaded was saved after the one this gate works from."""
        return self.found_seq != self.seq

    async def save(self, learned: Learned) -> bool:
        """Save ``learned`` over the version this gate works from; ``False`` when another
        gate saved one meanwhile (then nothing is written)."""
        # The versions are taken before the wait: another task of this gate may take up or
        # save a newer one meanwhile, and counting on from that would leave this gate a
        # version ahead of the row, blind to the next worker's save (and saving over it).
        after = self.seq
        written = after + 1
        pace = {**learned.to_json(), "by": self.token, "seq": written}
        saved = await self.store.save_pace(self.route, pace, after=after, max_age_s=PACE_MAX_AGE_S)
        if saved and written >= self.seq:
            self.seq, self.backoff = written, learned.backoff
        self.conflict = not saved
        return saved
