"""``app.compare`` end to end on the live sandbox: one batch per route, identical jobs, the page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner import app
from runner.compare import ComparisonOptions, ComparisonPlan, ComparisonReport, FitChoice
from runner.errors import UsageError
from runner.sandbox import SandboxHandle

from .conftest import FAST, sandbox_settings, write_manifest

pytestmark = pytest.mark.anyio

ROUTES = ("sandbox-openai", "sandbox-laozhang")


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
    plans: list[ComparisonPlan] = []
    how = ComparisonOptions(name="later", out_dir=tmp_path / "out", run=None, on_plan=plans.append)

    queued = await app.compare(settings, manifest, ROUTES, how)

    assert isinstance(queued, ComparisonReport)
    assert not queued.ran
    assert [s.pending for s in queued.summaries] == [4, 4]
    assert sandbox.sandbox.requests() == []
    still = await app.compare(settings, manifest, ROUTES, how)
    assert isinstance(still, ComparisonReport)
    # Held but not sent yet: a run of the comparison would still send all four.
    assert [(e.held, e.waiting, e.to_add, e.to_send) for e in plans[1].estimates] == [
        (4, 4, 0, 4)
    ] * 2
    await app.run(settings, ["later-sandbox-openai", "later-sandbox-laozhang"], FAST)
    again = await app.compare(settings, manifest, ROUTES, how)
    assert isinstance(again, ComparisonReport)
    assert [s.succeeded for s in again.summaries] == [4, 4]
    assert [(e.held, e.to_send) for e in plans[2].estimates] == [(4, 0)] * 2
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


def _head(manifest: Path, count: int, target: Path) -> Path:
    """The first ``count`` lines of ``manifest`` (same ids, prompts and sources)."""
    text = manifest.read_text("utf-8").splitlines(keepends=True)
    target.write_text("".join(text[:count]), "utf-8")
    return target


async def test_a_route_that_ran_part_of_the_manifest_still_holds_every_line(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """Each column holds every line, its own costs; the same comparison again buys nothing."""
    manifest = write_manifest(tmp_path / "in" / "m.jsonl", 6, size=False)
    settings = sandbox_settings(sandbox, tmp_path)
    part = _head(manifest, 2, tmp_path / "in" / "part.jsonl")
    await app.submit(settings, part, "sandbox-openai", name="earlier")
    await app.run(settings, ["earlier"], FAST)
    earlier = (await app.status(settings, ["earlier"])).batches[0]
    assert len(sandbox.sandbox.requests()) == 2
    sent_at_plan: list[int] = []
    plans: list[ComparisonPlan] = []

    def on_plan(plan: ComparisonPlan) -> None:
        sent_at_plan.append(len(sandbox.sandbox.requests()))
        plans.append(plan)

    how = ComparisonOptions(name="cmp", out_dir=tmp_path / "out", run=FAST, on_plan=on_plan)
    report = await app.compare(settings, manifest, ROUTES, how)

    assert isinstance(report, ComparisonReport)
    # Priced per route before anything was sent; every line is the comparison's own.
    assert sent_at_plan == [2]
    assert [(e.route, e.lines, e.held, e.to_add) for e in plans[0].estimates] == [
        (route, 6, 0, 6) for route in ROUTES
    ]
    assert all(e.typical > 0 for e in plans[0].estimates)
    for summary in report.summaries:
        assert (summary.jobs, summary.lines, summary.succeeded, summary.images) == (6, 6, 6, 6)
    assert len(sandbox.sandbox.requests()) == 2 + 12
    data = json.loads(report.data.read_text("utf-8"))
    assert [set(row["routes"]) for row in data["jobs"]] == [set(ROUTES)] * 6
    page = report.page.read_text("utf-8")
    assert page.count("<tr data-id=") == 6
    assert page.count("<td>6 of 6</td>") == 2
    assert "no result" not in page
    # Costs apart: each column's spend is its own batch's; the earlier batch keeps its own.
    statuses = {s.batch.name: s for s in (await app.status(settings)).batches}
    for summary in report.summaries:
        cells = [c.cost_usd or 0.0 for c in report.cells if c.route == summary.route]
        assert summary.spent_usd == pytest.approx(sum(cells))
        assert summary.spent_usd == pytest.approx(statuses[summary.batch].spent_usd)
    assert statuses["earlier"].spent_usd == pytest.approx(earlier.spent_usd)
    assert statuses["earlier"].total == 2

    again = await app.compare(settings, manifest, ROUTES, how)

    assert isinstance(again, ComparisonReport)
    assert len(sandbox.sandbox.requests()) == 2 + 12
    assert [(e.held, e.to_add) for e in plans[1].estimates] == [(6, 0), (6, 0)]
    assert [(s.jobs, s.succeeded) for s in again.summaries] == [(6, 6), (6, 6)]
    assert [s.spent_usd for s in again.summaries] == [s.spent_usd for s in report.summaries]
    # An ordinary batch re-submitted still adds nothing: its keys are the plain ones.
    resubmitted = await app.submit(settings, part, "sandbox-openai", name="earlier")
    assert (resubmitted.added, resubmitted.existing) == (0, 2)


async def test_a_new_comparison_name_buys_every_line_afresh(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    manifest = write_manifest(tmp_path / "in" / "m.jsonl", 3, size=False)
    settings = sandbox_settings(sandbox, tmp_path)
    first = ComparisonOptions(name="one", out_dir=tmp_path / "one", run=FAST)
    await app.compare(settings, manifest, ROUTES, first)
    second = ComparisonOptions(name="two", out_dir=tmp_path / "two", run=FAST)

    report = await app.compare(settings, manifest, ROUTES, second)

    assert isinstance(report, ComparisonReport)
    assert [s.batch for s in report.summaries] == [f"two-{r}" for r in ROUTES]
    assert [(s.jobs, s.succeeded) for s in report.summaries] == [(3, 3), (3, 3)]
    assert len(sandbox.sandbox.requests()) == 12


async def test_a_batch_of_the_comparisons_name_that_is_not_its_own_stops_it_unsent(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """No column silently holds other jobs: a clash is refused before anything is sent."""
    manifest = write_manifest(tmp_path / "in" / "m.jsonl", 4, size=False)
    part = _head(manifest, 2, tmp_path / "in" / "part.jsonl")
    fewer = sandbox_settings(sandbox, tmp_path / "fewer")
    await app.submit(fewer, part, "sandbox-openai", name="a-sandbox-openai")
    same = sandbox_settings(sandbox, tmp_path / "same")
    await app.submit(same, manifest, "sandbox-openai", name="b-sandbox-openai")

    how_a = ComparisonOptions(name="a", out_dir=tmp_path / "a", run=FAST)
    how_b = ComparisonOptions(name="b", out_dir=tmp_path / "b", run=FAST)

    with pytest.raises(UsageError, match=r"'a-sandbox-openai' holds 2 job\(s\) that are not"):
        await app.compare(fewer, manifest, ROUTES, how_a)
    # Same count, other jobs (submitted without the comparison's key seed): refused too,
    # before any route's batch is made or grows.
    with pytest.raises(UsageError, match=r"'b-sandbox-openai' holds 4 job\(s\) that are not"):
        await app.compare(same, manifest, ROUTES, how_b)

    assert sandbox.sandbox.requests() == []
    for settings, name, jobs in ((fewer, "a-sandbox-openai", 2), (same, "b-sandbox-openai", 4)):
        batches = (await app.status(settings)).batches
        assert [(s.batch.name, s.batch.job_count) for s in batches] == [(name, jobs)]
    assert not (tmp_path / "a" / "compare.html").exists()
    assert not (tmp_path / "b" / "compare.html").exists()
