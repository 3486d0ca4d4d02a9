"""An image of another size than asked is a paid success: kept, recorded, never bought twice.

The sandbox in ``tiny`` mode answers every request with a 64x64 image whatever size was asked
for, as a provider (or a gateway) that ignores ``size`` does. Each job is sent exactly once;
its file is kept and its output records what was asked and what came. With
``on_mismatch = "fail"`` on the route the job fails, but the paid file is kept all the same.
"""

from __future__ import annotations

import csv
import json
import tarfile
from pathlib import Path
from typing import Any

import anyio
import pyarrow.parquet as pq
import pytest

from runner import app
from runner.sandbox import SandboxConfig

from .conftest import MakeWorld
from .harness import (
    RUN_DEADLINE,
    World,
    assert_charges_agree,
    assert_log_matches_ledger,
    check_outputs,
    route_config,
)

ROUTE = "sandbox"
JOBS = 3
TINY = "64x64"
ASKED = "1024x1024"
FORMATS = ["files", "jsonl", "csv", "parquet", "webdataset", "html"]


def mismatch_world(world: MakeWorld, on_mismatch: str | None = None) -> World:
    settings: dict[str, Any] = {"max_attempts": 3, "rpm": 6000}
    if on_mismatch is not None:
        settings["on_mismatch"] = on_mismatch
    return world(SandboxConfig(tiny=True), config_text=route_config(**{ROUTE: settings}))


def lines() -> list[dict[str, Any]]:
    return [
        {"id": f"job-{i}", "prompt": f"a red kite, take {i}", "size": ASKED} for i in range(JOBS)
    ]


async def run_once(world: World) -> Any:
    batch = await world.submit(lines(), ROUTE)
    with anyio.fail_after(RUN_DEADLINE):
        await world.run()
    ledger = await world.rows(batch)
    seen = await world.settled_requests(JOBS)
    assert len(seen) == JOBS, "a delivered image was bought again"
    assert_log_matches_ledger(ledger, seen)
    assert_charges_agree(ledger, seen)
    assert len(ledger.attempts) == JOBS
    assert all(a["outcome"] == "ok" and a["charge_status"] == "charged" for a in ledger.attempts)
    assert len(ledger.outputs) == JOBS
    check_outputs(world, ledger)
    for out in ledger.outputs:
        assert (out["width"], out["height"]) == (64, 64)
        assert (out["asked"], out["got"]) == (ASKED, TINY)
    return batch, ledger


@pytest.mark.anyio
async def test_an_image_of_another_size_is_kept_as_a_success(world: MakeWorld) -> None:
    """Default ``on_mismatch = "keep"``: every job succeeds with one request, mismatch noted."""
    w = mismatch_world(world)
    batch, ledger = await run_once(w)
    assert ledger.states() == {"succeeded": JOBS}
    [status] = (await app.status(w.settings(), [batch.id])).batches
    assert (status.outputs, status.mismatched) == (JOBS, JOBS)
    assert status.to_json()["mismatched_outputs"] == JOBS
    costs = await app.costs(w.settings(), batch.id)
    [row] = costs.mismatched
    assert (row.route, row.images, row.attempts) == (ROUTE, JOBS, JOBS)
    assert row.cost_usd == pytest.approx(sum(a["expected_usd"] for a in ledger.attempts))
    assert costs.to_json()["mismatched"][0]["images"] == JOBS


@pytest.mark.anyio
async def test_on_mismatch_fail_fails_the_job_and_keeps_the_file(
    world: MakeWorld, tmp_path: Path
) -> None:
    """``on_mismatch = "fail"``: the jobs fail, their paid files are kept, nothing is re-sent."""
    w = mismatch_world(world, "fail")
    batch, ledger = await run_once(w)
    assert ledger.states() == {"failed": JOBS}
    for job in ledger.jobs:
        assert job["last_outcome"] == "ok"
        assert f"asked for {ASKED}, got {TINY}" in job["last_error"]
    # A second run has nothing to send: the failed jobs are not retried automatically.
    with anyio.fail_after(RUN_DEADLINE):
        result = await w.run()
    assert result.nothing_to_do
    assert len(w.requests()) == JOBS
    [status] = (await app.status(w.settings(), [batch.id])).batches
    assert status.mismatched == JOBS
    # The kept files are exported with their job's status and the mismatch.
    report = await app.export(w.settings(), batch.id, out_dir=tmp_path / "out", formats=["jsonl"])
    [jsonl] = report.formats["jsonl"].paths
    rows = [json.loads(line) for line in jsonl.read_text("utf-8").splitlines()]
    assert {(r["status"], r["asked"], r["got"]) for r in rows} == {("failed", ASKED, TINY)}
    assert len(rows) == JOBS
    assert all(r["path"] for r in rows)


@pytest.mark.anyio
async def test_every_export_carries_asked_and_got(world: MakeWorld, tmp_path: Path) -> None:
    """results.jsonl, jsonl, csv, parquet, the webdataset json and the gallery say it."""
    w = mismatch_world(world)
    batch, _ = await run_once(w)
    out_dir = tmp_path / "out"
    report = await app.export(w.settings(), batch.id, out_dir=out_dir, formats=FORMATS)
    paths = {name: fmt.paths for name, fmt in report.formats.items()}

    def records(rows: list[dict[str, Any]]) -> set[tuple[Any, Any]]:
        assert len(rows) == JOBS
        return {(r["asked"], r["got"]) for r in rows}

    expected = {(ASKED, TINY)}
    [folder] = paths["files"]
    results = (folder / "results.jsonl").read_text("utf-8").splitlines()
    assert records([json.loads(line) for line in results]) == expected
    [jsonl] = paths["jsonl"]
    assert records([json.loads(line) for line in jsonl.read_text("utf-8").splitlines()]) == expected
    [csv_path] = paths["csv"]
    with csv_path.open(newline="", encoding="utf-8") as fh:
        assert records(list(csv.DictReader(fh))) == expected
    [parquet] = paths["parquet"]
    assert records(pq.read_table(parquet).to_pylist()) == expected
    members: list[dict[str, Any]] = []
    for shard in paths["webdataset"]:
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    data = tar.extractfile(member)
                    assert data is not None
                    members.append(json.loads(data.read()))
    assert records(members) == expected
    [gallery] = [p for p in paths["html"] if p.suffix == ".html"]
    page = gallery.read_text("utf-8")
    assert page.count(f"asked for {ASKED}, got {TINY}") == JOBS
