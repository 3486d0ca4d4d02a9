"""One job through one attempt (JobRunner) against a loopback server and the real store
(SQLite and PostgreSQL).

A 200 is priced from its own ``usage`` before its images are checked: when an image then
fails (it does not decode, its base64 is broken, its URL cannot be fetched), the attempt keeps
that price and is ``charged``, as the provider billed it; only an answer with no image to
check at all is left to the route's policy for its outcome.
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from PIL import Image
from sqlalchemy import select

from runner.models import ChargeStatus, JobState, Outcome, Usage
from runner.pricing import load_price_book, token_cost
from runner.routes import load_catalog
from runner.run.attempt import JobRunner
from runner.run.gate import Gate, RouteGate
from runner.run.lanes import open_lane
from runner.run.retry import RetryPolicy
from runner.run.spending import Spending
from runner.run.stats import RunStats
from runner.store import Store
from runner.store.tables import attempts, jobs
from tests.http.loopback import Received, Server, replying, response, serve

from ..store.factories import specs, submit

pytestmark = pytest.mark.anyio

KEY = "sk-attempt-test"
WORKER = "w-attempt-test"
USAGE = {
    "input_tokens": 50,
    "output_tokens": 4160,
    "input_tokens_details": {"text_tokens": 50, "image_tokens": 0},
}
JSON = [("Content-Type", "application/json")]


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (90, 120, 30)).save(out, "PNG")
    return out.getvalue()


def answer(item: dict[str, str], *, usage: dict[str, Any] | None = USAGE) -> bytes:
    body: dict[str, Any] = {"created": 1, "data": [item]}
    if usage is not None:
        body["usage"] = usage
    return response(json.dumps(body).encode(), headers=JSON)


def half_image() -> dict[str, str]:
    return {"b64_json": base64.b64encode(png()[:40]).decode()}


#: What a test's server answers to each request it reads (the API call, a result URL).
Reply = Callable[[Received, Server], bytes]


def reply_image(request: Received, server: Server) -> bytes:
    return answer({"b64_json": base64.b64encode(png()).decode()})


def reply_cut_image(request: Received, server: Server) -> bytes:
    return answer(half_image())


def reply_bad_base64(request: Received, server: Server) -> bytes:
    return answer({"b64_json": "not base64 at all !!"})


def reply_gone_url(request: Received, server: Server) -> bytes:
    if request.target.startswith("/files/"):
        return response(b"gone", status=404, reason="Not Found")
    return answer({"url": f"{server.url}/files/img.png"})


def reply_cut_image_without_usage(request: Received, server: Server) -> bytes:
    return answer(half_image(), usage=None)


def reply_no_image(request: Received, server: Server) -> bytes:
    return response(json.dumps({"created": 1, "data": [], "usage": USAGE}).encode(), headers=JSON)


@dataclass
class Outcomes:
    attempts: list[dict[str, Any]]
    job: dict[str, Any]
    stats: RunStats

    @property
    def attempt(self) -> dict[str, Any]:
        """The one attempt of the job."""
        [attempt] = self.attempts
        return attempt


async def run_one(
    store: Store,
    tmp_path: Path,
    reply: Reply,
    *,
    gate: Gate | None = None,
    cancel_after: float | None = None,
) -> Outcomes:
    """Submit one job on the ``openai`` route pointed at a loopback server; run one attempt.

    With ``cancel_after``, the attempt is cancelled after that many seconds (the grace of a
    stopping run running out), and the job handed back as the worker's consumer does.
    """
    book = load_price_book()
    holder: list[Server] = []
    async with serve(replying(lambda request: reply(request, holder[0]))) as server:
        holder.append(server)
        route = replace(load_catalog().get("openai"), base_url=f"{server.url}/v1")
        batch = (await submit(store, "attempt", specs(1), route=route.name)).batch
        [job] = await store.claim(
            worker_id=WORKER, batch_ids=[batch.id], limit=1, lease_seconds=600.0
        )
        stats = RunStats()
        runner = JobRunner(
            store=store,
            ledger=store,
            book=book,
            data_dir=tmp_path / "data",
            worker_id=WORKER,
            stats=stats,
            spending=Spending(store=store, worker_id=WORKER),
        )
        async with AsyncExitStack() as stack:
            lane = await open_lane(
                stack,
                route,
                api_key=KEY,
                batch_ids=[batch.id],
                concurrency=1,
                gate=gate or RouteGate(6000),
                policy=RetryPolicy(max_attempts=1),
                tls=httpx.create_ssl_context(),
            )
            with anyio.move_on_after(cancel_after if cancel_after is not None else math.inf):
                try:
                    await runner.run_job(lane, job)
                except anyio.get_cancelled_exc_class():
                    with anyio.CancelScope(shield=True):
                        await store.release_unstarted(WORKER, [job.id])
                    raise
    async with store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in await conn.execute(select(attempts))]
        [row] = [dict(r._mapping) for r in await conn.execute(select(jobs))]
    return Outcomes(attempts=rows, job=row, stats=stats)


def usage_usd() -> float:
    """What ``USAGE`` costs on the ``openai`` route: the price every 200 here must carry."""
    usage = Usage(input_text_tokens=50, output_image_tokens=4160)
    return token_cost(load_price_book(), load_catalog().get("openai").model, usage)


async def test_a_delivered_image_is_priced_from_its_usage(store: Store, tmp_path: Path) -> None:
    out = await run_one(store, tmp_path, reply_image)
    assert (out.attempt["outcome"], out.attempt["charge_status"]) == ("ok", "charged")
    assert out.attempt["expected_usd"] == pytest.approx(usage_usd())
    assert out.job["state"] == JobState.SUCCEEDED.value


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [
        (reply_cut_image, Outcome.BAD_RESPONSE),
        (reply_bad_base64, Outcome.BAD_RESPONSE),
        (reply_gone_url, Outcome.DOWNLOAD_FAILED),
    ],
    ids=["image-cut-short", "bad-base64", "url-gone"],
)
async def test_a_200_whose_image_fails_a_check_keeps_its_usage_price_and_is_charged(
    store: Store, tmp_path: Path, reply: Reply, outcome: Outcome
) -> None:
    out = await run_one(store, tmp_path, reply)
    assert out.attempt["outcome"] == outcome.value
    assert out.attempt["http_status"] == 200
    assert out.attempt["charge_status"] == ChargeStatus.CHARGED.value
    assert out.attempt["expected_usd"] == pytest.approx(usage_usd())
    assert out.attempt["usage"] is not None
    # What the run counts as spent agrees with the ledger.
    assert out.stats.spent_usd == pytest.approx(usage_usd())
    assert out.job["state"] == JobState.FAILED.value  # one attempt allowed


async def test_a_200_without_usage_whose_image_fails_is_charged_at_the_estimate(
    store: Store, tmp_path: Path
) -> None:
    out = await run_one(store, tmp_path, reply_cut_image_without_usage)
    assert out.attempt["outcome"] == "bad_response"
    assert out.attempt["charge_status"] == "charged"
    assert out.attempt["usage"] is None
    assert out.attempt["expected_usd"] > 0


async def test_a_200_with_no_image_to_check_follows_the_routes_policy(
    store: Store, tmp_path: Path
) -> None:
    """``data: []``: the shape's answer did not parse, so the route's ``bad_response`` policy
    (``unknown`` on ``openai``) decides, as for any body that is not an answer."""
    out = await run_one(store, tmp_path, reply_no_image)
    assert out.attempt["outcome"] == "bad_response"
    assert out.attempt["charge_status"] == "unknown"


class _StoppedAfterTheRow(RouteGate):
    """A route that stops (another job's 401) while a request waits for its slot's time
    after its ledger row, as on a shared schedule (see ``SharedGate.leave``)."""

    async def leave(self) -> None:
        self.stop("auth: the key was revoked")
        await super().leave()


async def test_a_request_whose_route_stops_after_its_row_is_not_sent_and_is_queued_again(
    store: Store, tmp_path: Path
) -> None:
    """Its row is written, so it is closed: as interrupted, not sent and not charged, its job
    back in the queue for when the route works again, and nothing reaches the server."""
    arrived: list[Received] = []

    def reply(request: Received, server: Server) -> bytes:
        arrived.append(request)
        return reply_image(request, server)

    out = await run_one(store, tmp_path, reply, gate=_StoppedAfterTheRow(6000))
    assert arrived == []
    assert out.attempt["outcome"] == Outcome.INTERRUPTED.value
    assert out.attempt["charge_status"] == ChargeStatus.NOT_CHARGED.value
    assert out.attempt["expected_usd"] == 0.0
    assert out.job["state"] == JobState.QUEUED.value
