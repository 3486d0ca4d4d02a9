"""``app.compare`` end to end on the live sandbox: one batch per route, identical jobs, the page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner import app
from runner.compare import ComparisonOptions, ComparisonPlan, ComparisonReport, FitChoice
from runner.run.worker import RunOptions
from runner.sandbox import SandboxHandle

from .conftest import sandbox_settings, write_manifest

pytestmark = pytest.mark.anyio

ROUTES = ("sandbox-openai", "sandbox-laozhang")
FAST = RunOptions(retry_scale=0, handle_signals=False)


async def test_two_routes_run_identical_jobs_with_costs_apart_and_edits_flagged(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    manifest = write_manifest(tmp_path / "in" / "m.jsonl", 12)
    settings = sandbox_settings(sandbox, tmp_path)
    seen_plans: list[ComparisonPlan] = []
    how = ComparisonOptions(
        name="cmp",
        out_dir=tmp_path / "out",
        choices={"sandbox-laozhang": FitChoice.DROP},
        run=FAST,
        on_plan=seen_plans.append,
    )

    report = await app.compare(settings, manifest, ROUTES, how)

    assert isinstance(report, ComparisonReport)
    assert len(seen_plans) == 1
    openai, laozhang = report.summaries
    assert [s.batch for s in report.summaries] == ["cmp-sandbox-openai", "cmp-sandbox-laozhang"]
    for summary in report.summaries:
        assert (summary.jobs, summary.succeeded, summary.images) == (12, 12, 12)
        assert summary.success_rate == 1.0
        assert summary.p50_latency_ms is not None
        assert summary.p95_latency_ms is not None
        assert summary.p50_latency_ms <= summary.p95_latency_ms
        # Edits 1, 5, 9 ignore their source; 3, 7, 11 are real edits.
        assert summary.flags == {"ignored_source": 3, "ok": 3}
        assert summary.edits_scored == 6
    # Costs stay apart: laozhang's default group bills per call, OpenAI by tokens.
    assert laozhang.spent_usd == pytest.approx(12 * 0.03)
    assert laozhang.cost_per_image_usd == pytest.approx(0.03)
    assert openai.spent_usd != pytest.approx(laozhang.spent_usd)
    status = {s.batch.route: s for s in (await app.status(settings)).batches}
    assert status["sandbox-laozhang"].spent_usd == pytest.approx(laozhang.spent_usd)
    assert status["sandbox-openai"].spent_usd == pytest.approx(openai.spent_usd)
    # The same jobs reached the sandbox once per route; laozhang's without a size.
    assert len(sandbox.sandbox.requests()) == 24
    fitted = (tmp_path / "out" / "manifests" / "sandbox-laozhang.jsonl").read_text("utf-8")
    assert '"size"' not in fitted
    assert report.fitted == {
        "sandbox-laozhang": tmp_path / "out" / "manifests" / "sandbox-laozhang.jsonl"
    }
    by_id = {c.id: c for c in report.cells if c.route == "sandbox-openai"}
    assert by_id["p001"].flag == "ignored_source"
    assert by_id["p003"].flag == "ok"
    assert by_id["p003"].fidelity is not None
    assert by_id["p003"].fidelity > 0.7
    assert by_id["p000"].flag is None
    assert by_id["p000"].request_id
    data = json.loads(report.data.read_text("utf-8"))
    assert data == json.loads(json.dumps(report.to_json()))
    assert len(data["jobs"]) == 12
    assert set(data["jobs"][3]["routes"]) == set(ROUTES)
    page = report.page.read_text("utf-8")
    assert page.count("<tr data-id=") == 12
    assert "<script>" not in page


async def test_a_route_that_cannot_take_the_manifest_stops_it_before_anything_is_sent(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    manifest = write_manifest(tmp_path / "in" / "m.jsonl", 4)
    settings = sandbox_settings(sandbox, tmp_path)
    how = ComparisonOptions(name="cmp", out_dir=tmp_path / "out", run=FAST)

    result = await app.compare(settings, manifest, ROUTES, how)

    assert isinstance(result, ComparisonPlan)
    assert not result.ready
    assert [g.field for g in result.fits[1].gaps] == ["size"]
    assert sandbox.sandbox.requests() == []
    assert (await app.status(settings)).batches == []


async def test_no_run_leaves_the_batches_queued_and_a_second_compare_reports_them(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    manifest = write_manifest(tmp_path / "in" / "m.jsonl", 4, size=False)
    settings = sandbox_settings(sandbox, tmp_path)
    how = ComparisonOptions(name="later", out_dir=tmp_path / "out", run=None)

    queued = await app.compare(settings, manifest, ROUTES, how)

    assert isinstance(queued, ComparisonReport)
    assert not queued.ran
    assert [s.pending for s in queued.summaries] == [4, 4]
    assert sandbox.sandbox.requests() == []
    await app.run(settings, ["later-sandbox-openai", "later-sandbox-laozhang"], FAST)
    again = await app.compare(settings, manifest, ROUTES, how)
    assert isinstance(again, ComparisonReport)
    assert [s.succeeded for s in again.summaries] == [4, 4]
    # Re-submitting added nothing: each route's jobs ran once.
    assert len(sandbox.sandbox.requests()) == 8


async def test_three_routes_and_adapted_sizes(sandbox: SandboxHandle, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "in" / "m.jsonl", 3)
    settings = sandbox_settings(sandbox, tmp_path)
    routes = (*ROUTES, "sandbox-laozhang-vip")
    how = ComparisonOptions(
        name="three",
        out_dir=tmp_path / "out",
        choices=dict.fromkeys(routes, FitChoice.ADAPT),
        run=FAST,
    )

    report = await app.compare(settings, manifest, routes, how)

    assert isinstance(report, ComparisonReport)
    assert [s.succeeded for s in report.summaries] == [3, 3, 3]
    vip = [c for c in report.cells if c.route == "sandbox-laozhang-vip"]
    assert {(c.width, c.height) for c in vip} == {(2048, 1360)}
    assert report.plan.to_json()["routes"][2]["choice"] == "adapt"
