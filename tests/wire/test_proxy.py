"""A proxied route rides the same transport as a direct one: what one reads, so does the other.

The route's host is a name that does not resolve; ``HTTP_PROXY`` points at the zoo, which
answers as the origin behind a forward proxy would. A transport switched for proxied calls
shows here as a case that passes direct and fails proxied.
"""

from __future__ import annotations

import pytest

from .conftest import MakeWorld
from .harness import ZooWorld, assert_all_kept, assert_paid_once, briefs

pytestmark = pytest.mark.anyio

#: Reachable only through the proxy (``.invalid`` never resolves).
ORIGIN = "http://api.zoo.invalid/v1"


def via_proxy(world: ZooWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the route at :data:`ORIGIN` and the environment's proxy at the zoo."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, world.zoo.origin)
    world.base_url = ORIGIN


@pytest.mark.parametrize("case", ["plain", "stray_crlf", "bare_lf", "edit_plain"])
async def test_proxied_route_keeps_what_a_direct_one_keeps(
    zoo_world: MakeWorld, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    """Through ``HTTP_PROXY``: both jobs succeed, one request each, all via the proxy."""
    world = zoo_world(case)
    via_proxy(world, monkeypatch)
    out = await world.run_case(jobs=2)
    assert all(s.head.proxied for s in out.seen), briefs(out)
    assert_paid_once(world, out)
    assert_all_kept(world, out, jobs=2)


async def test_early_401_through_a_proxy_stops_the_route(
    zoo_world: MakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An early 401 to a large edit, through the proxy: auth, the route stops."""
    world = zoo_world("early_401_linger")
    via_proxy(world, monkeypatch)
    out = await world.run_case(jobs=2)
    assert all(s.head.proxied for s in out.seen), briefs(out)
    assert_paid_once(world, out)
    attempt = out.only_attempt("job-0")
    assert (attempt["outcome"], attempt["http_status"]) == ("auth", 401), briefs(out)
    assert "openai" in out.stopped
