"""Many jobs at once: the pool's connections reused in parallel, on SQLite and PostgreSQL.

The cases that leave something behind on a connection (a stray CRLF, a close nobody
announced, an idle close) are run eight jobs four at a time, so that several connections are
reused while others are in flight; and the money invariants are checked on PostgreSQL too.
"""

from __future__ import annotations

import pytest

from .conftest import MakeWorld
from .harness import assert_all_kept, assert_paid_once, briefs

pytestmark = pytest.mark.anyio

JOBS = 8


@pytest.mark.parametrize("case", ["plain", "stray_crlf", "close_after_response", "bare_lf"])
async def test_parallel_jobs_are_each_kept_and_paid_once(zoo_world: MakeWorld, case: str) -> None:
    """Eight jobs, four in flight: each succeeds at its first request, none bought twice."""
    world = zoo_world(case, concurrency=4)
    out = await world.run_case(jobs=JOBS)
    assert_paid_once(world, out)
    assert_all_kept(world, out, jobs=JOBS)
    assert len(out.seen) == JOBS, briefs(out)


@pytest.mark.parametrize("case", ["error_in_200", "cdn_524"])
async def test_money_invariants_on_postgres(zoo_world: MakeWorld, pg_url: str, case: str) -> None:
    """The same ledger on PostgreSQL: every request one row, every delivered image kept."""
    world = zoo_world(case, db_url=pg_url)
    out = await world.run_case(jobs=2)
    assert_paid_once(world, out)
    if case == "error_in_200":
        assert len(out.seen) == 1, briefs(out)
        assert "openai" in out.stopped
    else:
        assert out.ledger.states() == {"succeeded": 2}, briefs(out)
