"""``imagerun run`` as a user starts it, in a child process, against the zoo.

Python's development mode (``python -X dev``, or ``PYTHONASYNCIODEBUG=1``) is what a user
turns on to debug a run; the wire must read the same answers there as without it.
"""

from __future__ import annotations

import pytest

from .conftest import MakeWorld
from .harness import assert_all_kept, assert_paid_once

pytestmark = pytest.mark.anyio

DEV_STRICT = "aiohttp's parser turns strict in Python's dev mode: the answer is recorded lost"


@pytest.mark.parametrize(
    ("case", "flags"),
    [
        pytest.param("bare_lf", (), id="bare_lf"),
        pytest.param(
            "bare_lf",
            ("-X", "dev"),
            id="bare_lf-dev",
            marks=pytest.mark.xfail(strict=True, reason=DEV_STRICT),
        ),
    ],
)
async def test_cli_run_keeps_every_image(
    zoo_world: MakeWorld, case: str, flags: tuple[str, ...]
) -> None:
    """``imagerun run`` in a child process: both jobs kept, one request each."""
    world = zoo_world(case)
    out = await world.run_cli(jobs=2, python_flags=flags)
    assert_paid_once(world, out)
    assert_all_kept(world, out, jobs=2)
