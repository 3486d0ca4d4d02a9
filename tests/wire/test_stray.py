"""Bytes nobody asked for: a server that writes more after a complete 200.

A buggy gateway may send a second, unsolicited answer after the one it owed, or a few bytes
of garbage, while the client's connection sits idle in its pool. The next request must not
take those bytes for its answer: its own answer (billed by the server) is the one read, its
image kept, and nothing is sent twice. Three jobs run one after another on one route (one
request in flight), spaced so that the stray bytes arrive while the connection is idle.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import pytest

from .cases import DATE, JSON, Case, image_200, plain
from .harness import IMAGE, ZooWorld, assert_all_kept, assert_paid_once, briefs
from .server import Conn, Zoo, running_zoo, wire

#: How long after its answer the server writes the stray bytes (the client has read the
#: answer whole by then, and released the connection to its pool).
STRAY_AFTER = 0.05
#: Seconds between two requests' starts: the stray bytes land well inside this idle time.
GAP = 1.0
JOBS = 3


def _stray_image(zoo: Zoo) -> bytes:
    """A whole 200 carrying an image no request asked for, under a request id of its own."""
    body = json.dumps({"created": 1764633600, "data": [{"b64_json": zoo.image_b64()}]}).encode()
    return wire(
        "200 OK", ["x-request-id: req_stray", DATE, JSON, f"Content-Length: {len(body)}"], body
    )


def _later(stray: Callable[[Zoo], bytes]) -> Callable[[Zoo, Conn], Awaitable[None]]:
    async def after(zoo: Zoo, conn: Conn) -> None:
        await anyio.sleep(STRAY_AFTER)
        await conn.write(stray(zoo))

    return after


def _at_once(stray: Callable[[Zoo], bytes]) -> Callable[[Zoo, Conn], Awaitable[None]]:
    async def after(zoo: Zoo, conn: Conn) -> None:
        await conn.write(stray(zoo))

    return after


STRAYS: dict[str, Callable[[Zoo], bytes]] = {
    # A second answer, whole: the bug this guards against served it as the next job's image.
    "response": _stray_image,
    # The head of an answer and the start of a body that never ends.
    "truncated_response": lambda zoo: wire(
        "200 OK", ["x-request-id: req_stray", JSON, "Content-Length: 100000"], b'{"data": [{"b'
    ),
    # Not HTTP at all.
    "garbage": lambda zoo: b"garbage that is not an answer\r\n\r\n",
}

CASES = {
    **{
        f"stray_{name}_when_idle": Case(
            name=f"stray_{name}_when_idle", handler=image_200(plain, after=_later(stray)), gap=GAP
        )
        for name, stray in STRAYS.items()
    },
    # Written right behind the answer: the client may see it before it releases the connection.
    "stray_response_at_once": Case(
        name="stray_response_at_once",
        handler=image_200(plain, after=_at_once(_stray_image)),
        gap=GAP,
    ),
}


@pytest.fixture
def stray_world(tmp_path: Path, zoo_db: str) -> Iterator[Callable[[str], ZooWorld]]:
    with contextlib.ExitStack() as stack:

        def make(name: str) -> ZooWorld:
            case = CASES[name]
            zoo = stack.enter_context(running_zoo(case.handler, IMAGE))
            world = ZooWorld(zoo=zoo, case=case, root=tmp_path, db_url=zoo_db)
            world.settings_["rpm"] = round(60 / case.gap)
            return world

        yield make


@pytest.mark.anyio
@pytest.mark.parametrize("name", list(CASES))
async def test_stray_bytes_never_answer_the_next_request(
    stray_world: Callable[[str], ZooWorld], name: str
) -> None:
    """Each job gets its own answer (its status and request id in its row, its image kept),
    one request each, none re-sent; the connection that held stray bytes is not reused."""
    world = stray_world(name)
    out = await world.run_case(jobs=JOBS)
    assert_paid_once(world, out)
    assert_all_kept(world, out, jobs=JOBS)
    assert len(out.seen) == JOBS, briefs(out)
    ids = {a["provider_request_id"] for a in out.ledger.attempts}
    assert ids == {s.request_id for s in out.seen}, briefs(out)
    # Every answer was followed by stray bytes, so no connection served a second request.
    assert len({s.connection for s in out.seen}) == JOBS, [s.connection for s in out.seen]
