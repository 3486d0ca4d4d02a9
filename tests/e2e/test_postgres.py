"""The same basic run with PostgreSQL as the job store."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from runner.sandbox import FaultKind, FaultRule, SandboxConfig, SandboxHandle

from .harness import RUN_DEADLINE, TOLD_RPM, World, assert_log_matches_ledger, check_outputs, png


@pytest.mark.anyio
async def test_basic_run_on_postgresql(server: SandboxHandle, tmp_path: Path, pg_url: str) -> None:
    """Generations, an edit and a retried 500 on PostgreSQL: all succeed, ledger = log."""
    server.sandbox.reset(
        SandboxConfig(
            fault_rules=(FaultRule(match="#500#", kind=FaultKind.SERVER_ERROR, times=1),),
            tiny=True,
        )
    )
    w = World(handle=server, root=tmp_path, db_url=pg_url)
    w.source("source.png", png(64, 64))
    lines = [{"id": f"g{i}", "prompt": f"a lantern, take {i}"} for i in range(6)]
    lines += [
        {"id": "edit", "prompt": "make it glow", "images": ["source.png"]},
        {"id": "flaky", "prompt": "a lantern #500#"},
    ]
    batch = await w.submit(lines, "sandbox-openai")

    with anyio.fail_after(RUN_DEADLINE):
        result = await w.run([batch.id], rpm=TOLD_RPM)

    assert result.report is not None
    assert result.report.clean
    ledger = await w.rows(batch)
    assert ledger.states() == {"succeeded": len(lines)}
    assert [a["outcome"] for a in ledger.attempts_of("flaky")] == ["server_error", "ok"]
    assert len(ledger.outputs) == len(lines)
    check_outputs(w, ledger)
    seen = w.requests()
    assert len(seen) == len(lines) + 1
    assert_log_matches_ledger(ledger, seen)
