"""A route's learned pace, kept in its ``route_state`` row between runs and across workers.

The pace is a small JSON object (``runner.run.pacing.Learned`` as JSON) stamped with when it
was learned; a pace older than the caller's age limit is ignored. Beside it, under
``passed``, the route's running count of successful requests from every worker: the rate the
provider let through on the route as a whole, which no single worker sees.
"""

from __future__ import annotations

import json
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import literal_column, or_, select, text, update

from runner.models import utcnow
from runner.store.database import Database
from runner.store.outage import retried
from runner.store.tables import route_state

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

#: The key of the route's running count of successes in its ``pace`` object.
PASSED = "passed"

#: Add ``:n`` to the count, in one statement (workers add theirs side by side).
_ADD_PASSED = {
    "postgresql": "UPDATE route_state SET pace = jsonb_set(COALESCE(pace::jsonb, '{}'), "
    "'{passed}', to_jsonb(COALESCE((pace->>'passed')::bigint, 0) + :n))::json "
    "WHERE route = :route RETURNING (pace->>'passed')::bigint AS passed",
    "sqlite": "UPDATE route_state SET pace = json_set(COALESCE(pace, '{}'), '$.passed', "
    "COALESCE(json_extract(pace, '$.passed'), 0) + :n) "
    "WHERE route = :route RETURNING json_extract(pace, '$.passed') AS passed",
}
#: A new pace keeps the count that is there.
_KEEP_PASSED = {
    "postgresql": "CASE WHEN pace->'passed' IS NULL THEN CAST(:pace AS json) "
    "ELSE (CAST(:pace AS jsonb) || jsonb_build_object('passed', pace->'passed'))::json END",
    "sqlite": "CASE WHEN json_extract(pace, '$.passed') IS NULL THEN :pace "
    "ELSE json_set(:pace, '$.passed', json_extract(pace, '$.passed')) END",
}


#: The version of the saved pace (``seq`` in its object; none saved yet: 0).
_SEQ = {
    "postgresql": "COALESCE(CAST(pace->>'seq' AS bigint), 0)",
    "sqlite": "COALESCE(json_extract(pace, '$.seq'), 0)",
}


def _learned(pace: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in pace.items() if name != PASSED}


class PaceOps:
    """The :class:`runner.abc.RoutePace` verbs. Mixed into :class:`runner.store.Store`."""

    db: Database

    def _one_statement(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """Where a write of the route's row goes. On PostgreSQL one autocommitted statement:
        the row lock is released as soon as the UPDATE is done. In a BEGIN … COMMIT every
        worker's slot request (an UPDATE of the same row) queued behind it until the COMMIT
        came, however long this process's event loop took to send it: four workers adding
        their counts once a second held a route paced at 600 a minute to about 200."""
        if self.db.dialect == "postgresql":
            return self.db.autocommit()
        return self.db.writing()

    @retried
    async def load_pace(self, route: str, max_age_s: float) -> dict[str, Any] | None:
        since = utcnow() - timedelta(seconds=max_age_s)
        query = select(route_state.c.pace).where(
            route_state.c.route == route, route_state.c.pace_at >= since
        )
        async with self.db.reading() as conn:
            pace = (await conn.execute(query)).scalar_one_or_none()
        return _learned(pace) if pace else None

    @retried
    async def save_pace(
        self,
        route: str,
        pace: dict[str, Any],
        *,
        after: int | None = None,
        max_age_s: float | None = None,
    ) -> bool:
        kept = text(_KEEP_PASSED[self.db.dialect]).bindparams(pace=json.dumps(_learned(pace)))
        now = utcnow()
        statement = update(route_state).where(route_state.c.route == route)
        if after is not None:
            # Compare and set: over the version the caller last saw, or over a pace too old
            # for anyone to load (which the caller saw as none).
            unseen = [
                literal_column(_SEQ[self.db.dialect]) == after,
                route_state.c.pace_at.is_(None),
            ]
            if max_age_s is not None:
                unseen.append(route_state.c.pace_at < now - timedelta(seconds=max_age_s))
            statement = statement.where(or_(*unseen))
        statement = statement.values(pace=kept, pace_at=now).returning(route_state.c.route)
        async with self._one_statement() as conn:
            return (await conn.execute(statement)).first() is not None

    @retried
    async def count_passed(self, route: str, passed: int) -> int:
        statement = text(_ADD_PASSED[self.db.dialect])
        async with self._one_statement() as conn:
            total = (await conn.execute(statement, {"route": route, "n": passed})).scalar()
        return int(total or 0)

    @retried
    async def route_paces(self) -> dict[str, dict[str, Any]]:
        query = select(route_state.c.route, route_state.c.pace, route_state.c.pace_at).where(
            route_state.c.pace_at.is_not(None)
        )
        async with self.db.reading() as conn:
            rows = (await conn.execute(query)).all()
        return {
            row.route: {**_learned(row.pace), "learned_at": row.pace_at.isoformat()} for row in rows
        }
