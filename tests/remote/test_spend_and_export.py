"""What a Batch API run costs and exports: ``costs`` splits spend by route, prices the remote
batch's lines at the batch price beside the synchronous price, and every exported row names
its route and, for a line of a remote batch, the provider's batch id."""

from __future__ import annotations

import json
import math

import anyio
import pytest
from click.testing import CliRunner

from runner import app
from runner.cli import main
from runner.models import ChargeStatus, JobState, Usage
from runner.pricing import token_cost

from .conftest import ROUTE, MakeWorld
from .invariants import sandbox_batches

pytestmark = pytest.mark.anyio

SYNC = "sandbox-openai"


def lines(n: int, *, blocked: int = 0) -> list[dict[str, object]]:
    """``n`` low-quality prompts, the last ``blocked`` of them refused by moderation."""
    return [
        {
            "id": f"p{i}",
            "prompt": f"a paper boat on a pond, study {i}"
            + (" forbidden" if i >= n - blocked else ""),
            "quality": "low",
            "size": "1024x1024",
        }
        for i in range(n)
    ]


async def test_costs_split_by_route_with_remote_lines_at_the_batch_price(
    world: MakeWorld, db_url: str
) -> None:
    """On SQLite and PostgreSQL."""
    w = world(db_url=db_url)
    remote = await w.submit(lines(5, blocked=1), ROUTE, name="boats-batch")
    direct = await w.submit(lines(2), SYNC, name="boats-sync")
    await w.run()
    settings = w.settings()
    batch_ledger, sync_ledger = await w.rows(remote), await w.rows(direct)
    assert batch_ledger.states() == {JobState.SUCCEEDED.value: 4, JobState.FAILED.value: 1}

    report = await app.costs(settings, None)

    # The synchronous price of the batch lines, from their own usage at full token prices.
    paid = [a for a in batch_ledger.attempts if a["charge_status"] == ChargeStatus.CHARGED.value]
    full = sum(token_cost(settings.book, "gpt-image-2", Usage.from_json(a["usage"])) for a in paid)
    batch_spend = sum(a["expected_usd"] for a in paid)
    assert math.isclose(batch_spend, full / 2, abs_tol=1e-5)
    sync_spend = sum(a["expected_usd"] or 0 for a in sync_ledger.attempts)
    by_route = {r.route: r for r in report.routes}
    assert set(by_route) == {ROUTE, SYNC}
    assert by_route[ROUTE].attempts == 5
    assert by_route[ROUTE].charged_usd == pytest.approx(batch_spend, abs=1e-6)
    assert by_route[ROUTE].synchronous_usd == pytest.approx(full, abs=1e-5)
    assert by_route[SYNC].charged_usd == pytest.approx(sync_spend, abs=1e-6)
    assert by_route[SYNC].synchronous_usd is None
    # One remote batch: the provider's id, its five lines, four of them images.
    ours = {a["remote_batch_id"] for a in batch_ledger.attempts}
    (rb,) = report.remote
    assert {rb.id} == ours
    assert [b.id for b in sandbox_batches(w.handle.sandbox)] == [rb.remote_id]
    assert (rb.route, rb.status, rb.lines, rb.ok) == (ROUTE, "completed", 5, 4)
    assert rb.cost_usd == pytest.approx(batch_spend, abs=1e-6)
    data = report.to_json()
    assert [r["route"] for r in data["by_route"]] == sorted([ROUTE, SYNC])
    assert data["remote_batches"][0]["remote_id"] == rb.remote_id

    args = ["--db", w.db_url, "--data", str(w.data_dir), "costs", "boats-batch"]
    text = await anyio.to_thread.run_sync(lambda: CliRunner().invoke(main, args))
    assert text.exit_code == 0, text.output
    assert "Spend by route" in text.stdout
    assert f"saved ${full - batch_spend:.4f}" in text.stdout
    assert str(rb.remote_id) in text.stdout


async def test_export_rows_carry_route_and_remote_batch_id(world: MakeWorld) -> None:
    w = world()
    remote = await w.submit(lines(3, blocked=1), ROUTE, name="boats-batch")
    direct = await w.submit(lines(1), SYNC, name="boats-sync")
    await w.run()
    settings = w.settings()
    report = await app.costs(settings, remote.id)
    (rb,) = report.remote
    out = w.root / "export"

    for batch in (remote, direct):
        await app.export(settings, batch.id, out_dir=out, formats=["jsonl"], include_failed=True)

    batch_rows = [json.loads(x) for x in (out / "boats-batch.jsonl").read_text().splitlines()]
    assert sorted(r["status"] for r in batch_rows) == ["failed", "succeeded", "succeeded"]
    assert {(r["route"], r["remote_batch_id"]) for r in batch_rows} == {(ROUTE, rb.remote_id)}
    sync_rows = [json.loads(x) for x in (out / "boats-sync.jsonl").read_text().splitlines()]
    assert [(r["route"], r["remote_batch_id"]) for r in sync_rows] == [(SYNC, None)]
