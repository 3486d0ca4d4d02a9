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


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=DEV_STRICT)
async def test_dev_mode_reads_what_a_plain_run_reads(zoo_world: MakeWorld) -> None:
    """``python -X dev -m runner.cli run`` on bare-LF answers: both jobs kept, one request each
    (the same run in-process, without dev mode, is in test_framing.py)."""
    world = zoo_world("bare_lf")
    out = await world.run_cli(jobs=2, python_flags=("-X", "dev"))
    assert_paid_once(world, out)
    assert_all_kept(world, out, jobs=2)
