"""A route's learned pace, kept in its ``route_state`` row between runs and across workers.

The pace is a small JSON object (``runner.run.pacing.Learned`` as JSON) stamped with when it
was learned; a pace older than the caller's age limit is ignored.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from runner.models import utcnow
from runner.store.database import Database
from runner.store.outage import retried
from runner.store.tables import route_state


class PaceOps:
    """The :class:`runner.abc.RoutePace` verbs. Mixed into :class:`runner.store.Store`."""

    db: Database

    @retried
    async def load_pace(self, route: str, max_age_s: float) -> dict[str, Any] | None:
        since = utcnow() - timedelta(seconds=max_age_s)
        query = select(route_state.c.pace).where(
            route_state.c.route == route, route_state.c.pace_at >= since
        )
        async with self.db.reading() as conn:
            pace = (await conn.execute(query)).scalar_one_or_none()
        return dict(pace) if pace else None

    @retried
    async def save_pace(self, route: str, pace: dict[str, Any]) -> None:
        statement = (
            update(route_state)
            .where(route_state.c.route == route)
            .values(pace=pace, pace_at=utcnow())
        )
        async with self.db.writing() as conn:
            await conn.execute(statement)

    @retried
    async def route_paces(self) -> dict[str, dict[str, Any]]:
        query = select(route_state.c.route, route_state.c.pace, route_state.c.pace_at).where(
            route_state.c.pace.is_not(None)
        )
        async with self.db.reading() as conn:
            rows = (await conn.execute(query)).all()
        return {row.route: {**row.pace, "learned_at": row.pace_at.isoformat()} for row in rows}
