"""10,000 lines in one remote batch: gathered, uploaded, run and applied in one go."""

from __future__ import annotations

import pytest

from runner.models import JobState
from runner.sandbox import SandboxConfig

from .conftest import ROUTE, MakeWorld
from .test_driver import checked, prompts

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(900)]


async def test_ten_thousand_lines_in_one_remote_batch(world: MakeWorld) -> None:
    w = world(SandboxConfig(batch_window=600.0, batch_concurrency=64, tiny=True))
    batch = await w.submit(prompts(10_000), ROUTE)

    result = await w.run()

    assert result.report is not None
    assert result.report.clean
    ledger = await w.rows(batch)
    assert ledger.states() == {JobState.SUCCEEDED.value: 10_000}
    (rb,) = await checked(w, batch)
    assert (rb.line_count, rb.request_counts.get("completed")) == (10_000, 10_000)
    assert len(ledger.outputs) == 10_000
