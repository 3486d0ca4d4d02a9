"""What a 200 carries: every decodable image is a paid success, kept and never bought twice.

Base64 with MIME line breaks, an image of another size than asked, a URL result (served, sent
on with a redirect, or refused), a 200 whose image is broken (priced from its own usage),
and a body trickling in for longer than the route's ``timeout``.
"""

from __future__ import annotations

import pytest

from .cases import TRICKLE_GAP, TRICKLE_PIECES
from .conftest import MakeWorld
from .harness import IMAGE_SIZE, assert_all_kept, assert_paid_once, briefs

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("case", ["b64_mime_lf", "b64_mime_crlf"])
async def test_base64_with_line_breaks_is_kept(zoo_world: MakeWorld, case: str) -> None:
    """``b64_json`` broken every 76 characters (``\\n`` or ``\\r\\n``) decodes: kept once."""
    world = zoo_world(case)
    out = await world.run_case(jobs=2)
    assert_paid_once(world, out)
    assert_all_kept(world, out, jobs=2)


async def test_image_of_another_size_is_a_paid_success(zoo_world: MakeWorld) -> None:
    """Asked for 1024x1024, got 96x64: kept as a success, one request, charged."""
    world = zoo_world("other_size", max_attempts=2)
    out = await world.run_case(jobs=1)
    assert_paid_once(world, out)
    assert len(out.seen) == 1, briefs(out)
    attempt = out.only_attempt("job-0")
    assert (attempt["outcome"], attempt["charge_status"]) == ("ok", "charged"), briefs(out)
    [output] = out.ledger.outputs
    assert (output["width"], output["height"]) == IMAGE_SIZE
    assert (output["asked"], output["got"]) == ("1024x1024", "96x64")
    assert out.ledger.states() == {"succeeded": 1}


async def test_image_of_another_size_on_a_strict_route_fails_but_is_kept(
    zoo_world: MakeWorld,
) -> None:
    """With ``on_mismatch = "fail"``: the job fails, the image is kept, nothing is re-sent."""
    world = zoo_world("other_size", on_mismatch="fail")
    out = await world.run_case(jobs=1)
    assert_paid_once(world, out)
    assert len(out.seen) == 1, briefs(out)
    attempt = out.only_attempt("job-0")
    assert attempt["charge_status"] == "charged", briefs(out)
    assert "1024x1024" in (attempt["error_message"] or ""), briefs(out)
    [output] = out.ledger.outputs
    assert (output["asked"], output["got"]) == ("1024x1024", "96x64")
    assert out.ledger.states() == {"failed": 1}


@pytest.mark.parametrize("case", ["url_result", "url_307", "url_302"])
async def test_url_result_is_downloaded_and_kept(zoo_world: MakeWorld, case: str) -> None:
    """``data[0].url`` on the same server, served directly or after a redirect: kept once,
    fetched without the API key."""
    world = zoo_world(case)
    out = await world.run_case(jobs=1)
    assert_paid_once(world, out)
    assert_all_kept(world, out, jobs=1)
    assert out.downloads[-1].status == 200
    assert len(out.downloads) == (1 if case == "url_result" else 2)
    assert all(d.head.get("authorization") is None for d in out.downloads)


async def test_url_result_refused_is_a_charged_download_failure(zoo_world: MakeWorld) -> None:
    """The URL answers 403: download_failed, charged (the image was made and billed)."""
    world = zoo_world("url_403", max_attempts=2)
    out = await world.run_case(jobs=1)
    assert_paid_once(world, out)
    attempts = out.job_attempts("job-0")
    assert [a["outcome"] for a in attempts] == ["download_failed"] * 2, briefs(out)
    assert all(a["charge_status"] == "charged" for a in attempts)
    assert all(a["provider_request_id"] for a in attempts)
    assert out.ledger.states() == {"failed": 1}


async def test_broken_image_is_priced_from_its_usage(zoo_world: MakeWorld) -> None:
    """A 200 with ``usage`` whose image is cut short: bad_response, charged, usage kept."""
    world = zoo_world("corrupt_image_with_usage", max_attempts=1)
    out = await world.run_case(jobs=1)
    assert_paid_once(world, out)
    attempt = out.only_attempt("job-0")
    assert attempt["outcome"] == "bad_response", briefs(out)
    assert attempt["charge_status"] == "charged"
    assert attempt["usage"] is not None
    assert attempt["expected_usd"] > 0


#: The route's timeout in the trickle test; the body takes four times as long.
TRICKLE_TIMEOUT = 1.0


@pytest.mark.serial  # a latency bound in wall-clock time
async def test_timeout_is_a_deadline_for_the_whole_attempt(zoo_world: MakeWorld) -> None:
    """A body arriving in small pieces, each sooner than the timeout, for longer than it."""
    assert TRICKLE_PIECES * TRICKLE_GAP > 3 * TRICKLE_TIMEOUT
    world = zoo_world("trickle", timeout=TRICKLE_TIMEOUT, max_attempts=2)
    out = await world.run_case(jobs=1)
    assert_paid_once(world, out)
    attempts = out.job_attempts("job-0")
    assert [a["outcome"] for a in attempts] == ["timeout", "timeout"], briefs(out)
    assert all(a["latency_ms"] < (TRICKLE_TIMEOUT + 1.0) * 1000 for a in attempts), briefs(out)
    assert all(a["charge_status"] == "unknown" for a in attempts)
    assert out.ledger.states() == {"failed": 1}


@pytest.mark.serial  # a latency bound in wall-clock time
async def test_timeout_covers_the_download_of_a_url_result(zoo_world: MakeWorld) -> None:
    """The API answers at once; the image at its URL trickles for four times the timeout:
    the attempt still ends within the timeout, a charged download failure."""
    world = zoo_world("url_trickle", timeout=TRICKLE_TIMEOUT, max_attempts=1)
    out = await world.run_case(jobs=1)
    assert_paid_once(world, out)
    attempt = out.only_attempt("job-0")
    assert attempt["outcome"] in ("download_failed", "timeout"), briefs(out)
    assert attempt["charge_status"] == "charged", briefs(out)
    assert attempt["latency_ms"] < (TRICKLE_TIMEOUT + 1.0) * 1000, briefs(out)
