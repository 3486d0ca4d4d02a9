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

import functools
from datetime import timedelta
from typing import Any

import anyio
from sqlalchemy import Row, TextClause, bindparam, text

from runner.models import utcnow
from runner.store.database import Database
from runner.store.outage import retried
from runner.store.records import RateSlot
from runner.store.tables import UTCDateTime

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
#: The interval of the route's learned pace (``rpm`` in its ``pace`` object, saved no earlier
#: than ``:since``), or 0 when none is saved.
_PACED = {
    "postgresql": "COALESCE(CASE WHEN pace_at >= :since "
    "THEN 60.0 / NULLIF(CAST(pace->>'rpm' AS float), 0) END, 0)",
    "sqlite": "COALESCE(CASE WHEN pace_at >= :since "
    "THEN 60.0 / NULLIF(CAST(json_extract(pace, '$.rpm') AS REAL), 0) END, 0)",
}


@functools.cache
def _slot_statement(dialect: str, *, paced: bool) -> TextClause:
    """The slot-taking UPDATE for ``dialect``: one interval after the last slot (``paced``:
    at least the route's learned pace saved since ``:since``), plus the asker's allowance."""
    now, greatest = _NOW[dialect], _GREATEST[dialect]
    paused = f"COALESCE(pause_until, 0) - {now}"
    gap = ":interval"
    if paced:
        # The route's learned pace, as the last worker to change it saved it (a backoff is
        # saved at once): every worker's slots keep to it from the next one on, not from
        # when the worker next loads the pace (a second or more later; four workers told
        # three times the limit sent at that rate for 2 s after the first 429).
        gap = f"{greatest}(:interval, {_PACED[dialect]})"
    statement = text(
        f"UPDATE route_state SET tat = CASE WHEN {paused} > 0 THEN tat "
        f"ELSE {greatest}(tat + {gap} + :allowance, {now}) END "
        "WHERE route = :route "
        f"RETURNING tat - :tolerance - {now} AS wait, {paused} AS paused, {now} AS clock"
    )
    if paced:
        statement = statement.bindparams(bindparam("since", type_=UTCDateTime))
    return statement


def _slot(row: Row[Any], asked: float) -> RateSlot:
    wait, paused, clock = float(row.wait), float(row.paused), float(row.clock)
    return RateSlot(max(0.0, wait), paused, clock, asked, anyio.current_time())


class RouteStateOps:
    """The :class:`runner.abc.RouteState` verbs. Mixed into :class:`runner.store.Store`."""

    db: Database

    @retried
    async def ensure_route_state(self, route: str) -> None:
        async with self.db.writing() as conn:
            await conn.execute(_ENSURE, {"route": route, "now": utcnow()})

    @retried
    async def take_rate_slot(
        self,
        route: str,
        interval: float,
        tolerance: float = 0.0,
        *,
        paced_within: float | None = None,
        allowance: float = 0.0,
    ) -> RateSlot:
        statement = _slot_statement(self.db.dialect, paced=paced_within is not None)
        params: dict[str, object] = {
            "route": route,
            "interval": interval,
            "tolerance": tolerance,
            "allowance": allowance,
        }
        if paced_within is not None:
            params["since"] = utcnow() - timedelta(seconds=paced_within)
        if self.db.dialect != "postgresql":
            async with self.db.writing() as conn:
                asked = anyio.current_time()
                row = (await conn.execute(statement, params)).one()
                return _slot(row, asked)
        # One autocommitted statement: the row lock is released by the server as soon as the
        # UPDATE is done. In a BEGIN … COMMIT, every other worker's slot request would queue
        # behind this one until our COMMIT arrived, however long our event loop took to send
        # it, and the schedule would fall behind the clock (capacity lost for good).
        async with self.db.autocommit() as conn:
            # Timed around the statement alone, not the connection's checkout and ping.
            asked = anyio.current_time()
            row = (await conn.execute(statement, params)).one()
            return _slot(row, asked)

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
