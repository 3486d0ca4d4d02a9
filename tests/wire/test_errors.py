"""Error answers, classified by what they mean for money and for the route.

A bad key or an empty quota stops the route (the remaining jobs stay queued, nothing more is
sent); a request too large fails its job without a retry; a CDN's gateway timeout means the
origin may have done the work; a POST redirected with 307 is followed, one with 302 stops the
route and says where it was sent.
"""

from __future__ import annotations

import pytest

from .cases import GATEWAY_ID
from .conftest import MakeWorld
from .harness import assert_paid_once, briefs

pytestmark = pytest.mark.anyio


def xfail(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=reason)


async def test_early_401_to_a_large_edit_stops_the_route(zoo_world: MakeWorld) -> None:
    """A 401 written before the upload was read (then a lingering close): auth, route stops."""
    world = zoo_world("early_401_linger")
    out = await world.run_case(jobs=3)
    assert_paid_once(world, out)
    assert len(out.seen) == 1, briefs(out)
    attempt = out.only_attempt("job-0")
    assert (attempt["outcome"], attempt["http_status"]) == ("auth", 401), briefs(out)
    assert attempt["charge_status"] == "not_charged"
    assert "openai" in out.stopped
    assert out.ledger.states() == {"queued": 3}


async def test_early_413_to_a_large_edit_fails_without_a_retry(zoo_world: MakeWorld) -> None:
    """A 413 written before the upload was read: invalid_request, each job fails at once."""
    world = zoo_world("early_413_linger")
    out = await world.run_case(jobs=2)
    assert_paid_once(world, out)
    assert len(out.seen) == 2, briefs(out)
    for job in ("job-0", "job-1"):
        attempt = out.only_attempt(job)
        assert (attempt["outcome"], attempt["http_status"]) == ("invalid_request", 413)
        assert attempt["charge_status"] == "not_charged"
    assert out.ledger.states() == {"failed": 2}


@pytest.mark.parametrize("case", ["early_401", "early_413"])
async def test_early_answer_then_reset_is_recorded_honestly(
    zoo_world: MakeWorld, case: str
) -> None:
    """The server answers early and closes with the upload unread (the kernel resets).

    Whether the answer can still be read races the reset, on every transport measured. Either
    it is read and classified, or the attempt is recorded as what it is -- the request went
    out, the provider may have seen it -- and never as ``not_charged``.
    """
    world = zoo_world(case, max_attempts=2)
    out = await world.run_case(jobs=1)
    assert_paid_once(world, out, statuses=False)
    status = 401 if case == "early_401" else 413
    classified = {"early_401": "auth", "early_413": "invalid_request"}[case]
    for attempt in out.ledger.attempts:
        read = (attempt["outcome"], attempt["http_status"]) == (classified, status)
        assert read or attempt["charge_status"] != "not_charged", briefs(out)
    if any(a["outcome"] == "auth" for a in out.ledger.attempts):
        assert "openai" in out.stopped


async def test_error_object_in_a_200_is_that_error(zoo_world: MakeWorld) -> None:
    """A one-api 200 carrying ``insufficient_user_quota``: quota_exhausted, the route stops,
    the request id is taken from the message, and nothing is charged or re-sent."""
    world = zoo_world("error_in_200")
    out = await world.run_case(jobs=3)
    assert_paid_once(world, out)
    assert len(out.seen) == 1, briefs(out)
    attempt = out.only_attempt("job-0")
    assert attempt["outcome"] == "quota_exhausted", briefs(out)
    assert attempt["error_code"] == "insufficient_user_quota"
    assert attempt["gateway_request_id"] == GATEWAY_ID
    assert attempt["charge_status"] == "not_charged"
    assert "openai" in out.stopped
    assert out.ledger.states() == {"queued": 3}


@pytest.mark.parametrize("case", ["truncated_200", "close_after_request", "reset_after_request"])
async def test_request_written_then_lost_is_never_not_charged(
    zoo_world: MakeWorld, case: str
) -> None:
    """The request went out whole and the answer was lost (cut short, a close, a reset):
    the provider may have billed it, so no attempt of it is recorded ``not_charged``."""
    world = zoo_world(case, max_attempts=2)
    out = await world.run_case(jobs=1)
    assert_paid_once(world, out)
    attempts = out.job_attempts("job-0")
    assert attempts, briefs(out)
    assert all(a["charge_status"] != "not_charged" for a in attempts), briefs(out)
    assert out.ledger.states().keys() <= {"failed", "unknown"}, briefs(out)


async def test_request_on_a_connection_closing_under_it_is_not_bought_twice(
    zoo_world: MakeWorld,
) -> None:
    """The server's keep-alive timer runs out as the next request arrives on the connection:
    that request is closed unanswered. Its attempt may have been seen (never ``not_charged``);
    each image is bought once."""
    world = zoo_world("keepalive_race")
    out = await world.run_case(jobs=2)
    assert_paid_once(world, out)
    unanswered = [s for s in out.seen if s.status is None]
    assert len(unanswered) == 1, briefs(out)
    [row] = [a for a in out.ledger.attempts if a["id"] == unanswered[0].client_request_id]
    assert row["charge_status"] != "not_charged", briefs(out)
    assert out.only_attempt("job-0")["outcome"] == "ok"


@pytest.mark.parametrize("case", ["cdn_502", "cdn_504", "cdn_524"])
async def test_cdn_gateway_error_is_a_timeout(zoo_world: MakeWorld, case: str) -> None:
    """A CDN's 502/504/524 HTML page: class timeout, charged by the route's timeout policy
    (``unknown`` on ``openai``); the retry then succeeds."""
    world = zoo_world(case)
    out = await world.run_case(jobs=1)
    assert_paid_once(world, out)
    first, second = out.job_attempts("job-0")
    assert (first["outcome"], first["http_status"]) == ("timeout", int(case[-3:])), briefs(out)
    assert first["charge_status"] == "unknown"
    assert second["outcome"] == "ok"
    assert out.ledger.states() == {"succeeded": 1}


async def test_cdn_524_on_a_route_that_bills_timeouts_is_charged(zoo_world: MakeWorld) -> None:
    """On a gateway whose timeouts are billed (``laozhang``), a 524 is ``charged``."""
    world = zoo_world("cdn_524", route="laozhang")
    out = await world.run_case(jobs=1)
    assert_paid_once(world, out)
    first, second = out.job_attempts("job-0")
    assert (first["outcome"], first["charge_status"]) == ("timeout", "charged"), briefs(out)
    assert second["outcome"] == "ok"


async def test_307_is_followed(zoo_world: MakeWorld) -> None:
    """A 307 on the API call is followed on the same host; one attempt, its image kept."""
    world = zoo_world("api_307")
    out = await world.run_case(jobs=1)
    assert_paid_once(world, out)
    assert [s.path for s in out.seen] == ["/v1/images/generations", "/v1/moved/images/generations"]
    attempt = out.only_attempt("job-0")
    assert (attempt["outcome"], attempt["http_status"]) == ("ok", 200), briefs(out)
    assert out.ledger.states() == {"succeeded": 1}


async def test_302_stops_the_route_naming_the_location(zoo_world: MakeWorld) -> None:
    """A 302 on the API call: nothing followed, the route stops and says where it pointed."""
    world = zoo_world("api_302")
    out = await world.run_case(jobs=2)
    assert_paid_once(world, out)
    assert len(out.seen) == 1, briefs(out)
    attempt = out.only_attempt("job-0")
    assert attempt["http_status"] == 302
    assert attempt["charge_status"] == "not_charged"
    assert f"{world.zoo.origin}/v1/moved/images/generations" in out.stopped.get("openai", "")
    assert out.ledger.states() == {"queued": 2}
