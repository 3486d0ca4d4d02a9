"""Route state shared by every worker process: request-rate schedule and 429 pause.

The rate is a GCRA-style schedule kept in one row per route: ``tat`` (epoch seconds on the
*database's* clock) is the time of the last slot taken, and the next slot is one interval
after it, the interval of the worker that asks for it (or now, if the route was idle).
Taking a slot is one atomic ``UPDATE … RETURNING`` that tells the caller how long to wait, so
N workers on N machines send at most one request per interval between them, and their clocks
never need to agree (only the database's clock is read).

Each slot is spaced from the one before by its own taker's pace, not the previous taker's:
a worker probing above the limit then has its own request refused, and backs off itself.
Spaced by the previous taker's interval, the request after a fast worker's slot came too
soon, its (slower) worker was refused and backed off, and the fast one probed on (four
workers not told the rate sat at a third of a strict limit, refused every 30 s).
"""

from __future__ import annotations

from sqlalchemy import text

from runner.models import utcnow
from runner.store.database import Database
from runner.store.outage import retried

_ENSURE = text(
    "INSERT INTO route_state (route, tat, updated_at) VALUES (:route, 0, :now) "
    "ON CONFLICT (route) DO NOTHING"
)

_GREATEST = {"postgresql": "GREATEST", "sqlite": "MAX"}
#: The database's clock in epoch seconds (``clock_timestamp``: not frozen at transaction start).
_NOW = {
    "postgresql": "extract(epoch from clock_timestamp())",
    "sqlite": "(julianday('now') - 2440587.5) * 86400.0",
}


class RouteStateOps:
    """The :class:`runner.abc.RouteState` verbs. Mixed into :class:`runner.store.Store`."""

    db: Database

    @retried
    async def ensure_route_state(self, route: str) -> None:
        async with self.db.writing() as conn:
            await conn.execute(_ENSURE, {"route": route, "now": utcnow()})

    @retried
    async def take_rate_slot(
        self, route: str, interval: float, tolerance: float = 0.0
    ) -> tuple[float, float]:
        now, greatest = _NOW[self.db.dialect], _GREATEST[self.db.dialect]
        paused = f"COALESCE(pause_until, 0) - {now}"
        statement = text(
            f"UPDATE route_state SET tat = CASE WHEN {paused} > 0 THEN tat "
            f"ELSE {greatest}(tat + :interval, {now}) END "
            "WHERE route = :route "
            f"RETURNING tat - :tolerance - {now} AS wait, {paused} AS paused"
        )
        params = {"route": route, "interval": interval, "tolerance": tolerance}
        if self.db.dialect != "postgresql":
            async with self.db.writing() as conn:
                row = (await conn.execute(statement, params)).one()
            return max(0.0, float(row.wait)), float(row.paused)
        # One autocommitted statement: the row lock is released by the server as soon as the
        # UPDATE is done. In a BEGIN … COMMIT, every other worker's slot request would queue
        # behind this one until our COMMIT arrived, however long our event loop took to send
        # it, and the schedule would fall behind the clock (capacity lost for good).
        async with self.db.autocommit() as conn:
            row = (await conn.execute(statement, params)).one()
        return max(0.0, float(row.wait)), float(row.paused)

    @retried
    async def pause_route(self, route: str, seconds: float) -> None:
        now, greatest = _NOW[self.db.dialect], _GREATEST[self.db.dialect]
        statement = text(
            "UPDATE route_state SET "
            f"pause_until = {greatest}(COALESCE(pause_until, 0), {now} + :seconds), "
            f"tat = {greatest}(tat, {now} + :seconds) "
            f"WHERE route = :route"
        )
        async with self.db.writing() as conn:
            await conn.execute(statement, {"route": route, "seconds": seconds})
