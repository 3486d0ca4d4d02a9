"""One attempt under faults around it: answers only partly usable, a disk that refuses the image,
waits no clock can hold, and a run stopped at each await between the start row and the ledger's
last word. Whatever happens, no attempt row is left ``sending``, a delivered
image is kept, and a request that never left costs nothing.

Against a loopback server and the real store (SQLite and PostgreSQL), as ``test_attempt``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import anyio
import pytest

from runner.run.gate import RouteGate
from runner.run.shared_gate import SharedGate
from runner.store import Store
from tests.http.loopback import Received, Server, response
from tests.run.test_attempt import JSON, USAGE, Reply, half_image, png, reply_image, run_one

pytestmark = pytest.mark.anyio


def reply_one_good_one_cut(request: Received, server: Server) -> bytes:
    good = {"b64_json": base64.b64encode(png()).decode()}
    body = {"created": 1, "data": [good, half_image()], "usage": USAGE}
    return response(json.dumps(body).encode(), headers=JSON)


def reply_429(*hint: tuple[str, str]) -> Reply:
    def reply(request: Received, server: Server) -> bytes:
        body = b'{"error":{"message":"slow down","type":"requests"}}'
        return response(body, status=429, reason="Too Many Requests", headers=[*JSON, *hint])

    return reply


async def test_a_200_with_one_decodable_image_keeps_it_and_is_not_bought_again(
    store: Store, tmp_path: Path
) -> None:
    out = await run_one(store, tmp_path, reply_one_good_one_cut)
    assert out.job["state"] == "succeeded"
    assert (out.attempt["outcome"], out.attempt["charge_status"]) == ("ok", "charged")
    assert out.attempt["images_returned"] == 1
    assert "does not decode" in (out.attempt["error_message"] or "")
    assert len(list((tmp_path / "data").rglob("*.png"))) == 1


@pytest.mark.parametrize(
    "hint",
    [("Retry-After", "1e400"), ("x-ratelimit-reset-requests", "99999999999h")],
    ids=["retry-after-1e400", "reset-1e11h"],
)
async def test_a_wait_too_long_for_any_clock_stops_the_route_instead_of_crashing(
    store: Store, tmp_path: Path, hint: tuple[str, str]
) -> None:
    gate = RouteGate(6000)
    out = await run_one(store, tmp_path, reply_429(hint), gate=gate)
    assert out.attempt["state"] == "done"
    assert out.attempt["charge_status"] == "not_charged"
    assert gate.stopped is not None
    assert "past the job's deadline" in gate.stopped
    assert out.job["state"] == "queued"


async def test_a_wait_past_the_deadline_stops_a_shared_route_and_pauses_no_other_worker(
    store: Store, tmp_path: Path
) -> None:
    """A 429 asking for a wait past the job's deadline stops the route, naming until when; it
    does not pause it. Shared through the database, a pause of the whole wait (two hours here,
    a year for a Retry-After no clock can hold) held every other worker, and every later run on
    the database, silent for that long, where they would have sent and learned of the stop."""
    gate = SharedGate(store, "openai", 6000)
    await gate.start()
    out = await run_one(store, tmp_path, reply_429(("Retry-After", "7200")), gate=gate)
    assert gate.stopped is not None
    assert "past the job's deadline" in gate.stopped
    assert out.job["state"] == "queued"
    other = SharedGate(store, "openai", 6000)
    await other.start()
    with anyio.fail_after(5):
        await other.admit()
    assert other.paused_for < 5


async def test_a_wait_within_the_deadline_pauses_every_worker_on_a_shared_route_for_all_of_it(
    store: Store, tmp_path: Path
) -> None:
    gate = SharedGate(store, "openai", 6000)
    await gate.start()
    await run_one(store, tmp_path, reply_429(("Retry-After", "30")), gate=gate)
    assert gate.stopped is None
    paused = (await store.take_rate_slot("openai", 0.01)).paused
    assert 25.0 < paused <= 30.0


async def test_an_image_the_disk_refuses_finishes_its_attempt_as_paid_and_stops_the_route(
    store: Store, tmp_path: Path
) -> None:
    (tmp_path / "data").write_text("not a directory")  # every write under data/ fails
    gate = RouteGate(6000)
    out = await run_one(store, tmp_path, reply_image, gate=gate)
    assert out.attempt["state"] == "done"
    assert out.attempt["charge_status"] == "charged"
    assert out.job["state"] == "failed"  # paid: never re-sent without the user's say-so
    assert gate.stopped is not None
    assert gate.stopped.startswith("disk:")


class SlowDeparture(RouteGate):
    """A paced route: the request leaves only after a long wait for its slot."""

    async def depart(self) -> None:
        await anyio.sleep(30)


async def test_a_stop_while_waiting_to_depart_leaves_no_row_and_the_job_queued(
    store: Store, tmp_path: Path
) -> None:
    """The last spacing wait comes before the start row: a stop (or a kill) there leaves no
    row to be judged ``unknown`` for a request that never left."""
    out = await run_one(store, tmp_path, reply_image, gate=SlowDeparture(6000), cancel_after=0.5)
    assert out.attempts == []
    assert out.job["state"] == "queued"


class SlowSharedPause(RouteGate):
    """A pause written somewhere slow, as the shared gate writes it to the database: still
    being written when the stop comes (one second in), whatever the load."""

    async def pause(self, seconds: float) -> None:
        await anyio.sleep(3)


async def test_a_stop_while_a_failure_is_being_applied_still_writes_its_row(
    store: Store, tmp_path: Path
) -> None:
    out = await run_one(
        store,
        tmp_path,
        reply_429(("Retry-After", "5")),
        gate=SlowSharedPause(6000),
        cancel_after=1.0,
    )
    assert out.attempt["state"] == "done"
    assert out.attempt["outcome"] == "rate_limited"
