"""Jobs through ``sandbox-openai-batch``: remote batches on the sandbox, end to end.

Each test runs the real runner in-process against the sandbox as a real HTTP server, then
checks the jobs, the ledger, the files on disk and the sandbox's own records agree.
"""

from __future__ import annotations

import io
import math

import anyio
import pytest
from PIL import Image

from runner import app
from runner.errors import ValidationFailed
from runner.models import JobState, Usage
from runner.pricing import PricedJob, token_cost, worst_case
from runner.sandbox import FaultKind, FaultRule, SandboxConfig
from runner.store import BatchInfo, RemoteBatch
from tests.e2e.harness import World, png, route_config

from .conftest import ROUTE, MakeWorld
from .invariants import check_remote, sandbox_batches

pytestmark = pytest.mark.anyio


def prompts(n: int, start: int = 0) -> list[dict[str, object]]:
    return [
        {"id": f"g{i}", "prompt": f"a red kite over the dunes, study {i}", "quality": "low"}
        for i in range(start, start + n)
    ]


async def remote_rows(w: World, batch: BatchInfo) -> list[RemoteBatch]:
    async with app.open_store(w.settings()) as store:
        return await store.remote_batches([batch.id])


async def checked(w: World, batch: BatchInfo) -> list[RemoteBatch]:
    """The remote batches of ``batch``, once the invariants hold."""
    ledger = await w.rows(batch)
    ours = await remote_rows(w, batch)
    check_remote(w.handle.sandbox, ours, ledger.attempts, ledger.jobs, ledger.outputs)
    return ours


async def test_generations_run_as_one_remote_batch_at_half_price(world: MakeWorld) -> None:
    w = world()
    batch = await w.submit(prompts(6), ROUTE)

    result = await w.run()

    assert result.report is not None
    assert result.report.clean
    ledger = await w.rows(batch)
    assert ledger.states() == {JobState.SUCCEEDED.value: 6}
    for output in ledger.outputs:
        with Image.open(w.data_dir / output["path"]) as image:
            assert image.size == (output["width"], output["height"])
    (rb,) = await checked(w, batch)
    assert (rb.step.value, rb.status, rb.line_count) == ("done", "completed", 6)
    assert {a["remote_batch_id"] for a in ledger.attempts} == {rb.id}
    # Half of what the same usage costs at the synchronous token prices.
    book = w.settings().book
    for attempt in ledger.attempts:
        full = token_cost(book, "gpt-image-2", Usage.from_json(attempt["usage"]) or Usage())
        assert math.isclose(attempt["expected_usd"], full / 2, abs_tol=2e-6)
    # The input file we uploaded is gone from the provider once applied.
    assert w.handle.sandbox.uploads.get(rb.input_file_id or "") is None
    assert not list((w.data_dir / "remote").glob("*"))


async def test_edits_carry_small_sources_inline_and_upload_large_ones(world: MakeWorld) -> None:
    """A line over batch_max_line_bytes references its source by file_id (purpose vision);
    the uploaded sources are deleted once the remote batch is applied."""
    w = world(config_text=route_config(**{ROUTE: {"batch_max_line_bytes": 20_000}}))
    small = w.source("small.png", png(32, 32))
    mask = w.source("mask.png", rgba_png(32, 32))
    large = w.source("large.png", noise_png(160, 160))
    lines = [
        {"id": "e-small", "prompt": "make it blue", "images": [str(small)], "mask": str(mask)},
        {"id": "e-large", "prompt": "make it green", "images": [str(large)]},
    ]
    batch = await w.submit(lines, ROUTE)

    result = await w.run()

    assert result.report is not None
    assert result.report.clean
    ledger = await w.rows(batch)
    assert ledger.states() == {JobState.SUCCEEDED.value: 2}
    (rb,) = await checked(w, batch)
    assert len(rb.source_file_ids) == 1, "only the large source went as a file"
    (file_id,) = rb.source_file_ids.values()
    assert w.handle.sandbox.uploads.get(file_id) is None, "the uploaded source was deleted"
    edits = [r for r in w.requests() if r.batch_id is not None]
    assert sorted(r.n_sources for r in edits) == [1, 1]
    assert {a["endpoint"] for a in ledger.attempts} == {"/images/edits"}


async def test_error_lines_are_classified_like_synchronous_errors(world: MakeWorld) -> None:
    """A moderation block fails for good; a server error goes into a later remote batch."""
    rules = (FaultRule(match="#500#", kind=FaultKind.SERVER_ERROR, times=1),)
    w = world(SandboxConfig(batch_window=20.0, fault_rules=rules))
    lines = [
        *prompts(3),
        {"id": "blocked", "prompt": "a forbidden thing"},
        {"id": "flaky", "prompt": "a flaky one #500#"},
    ]
    batch = await w.submit(lines, ROUTE)

    await w.run()

    ledger = await w.rows(batch)
    assert ledger.job("blocked")["state"] == "failed"
    assert [a["outcome"] for a in ledger.attempts_of("blocked")] == ["moderation_blocked"]
    assert [a["outcome"] for a in ledger.attempts_of("flaky")] == ["server_error", "ok"]
    assert ledger.job("flaky")["state"] == "succeeded"
    ours = await checked(w, batch)
    flaky = [a["remote_batch_id"] for a in ledger.attempts_of("flaky")]
    assert len(set(flaky)) == 2, "the retry went in a later remote batch"
    assert len(ours) == 2
    assert all(a["charge_status"] == "not_charged" for a in ledger.attempts if a["outcome"] != "ok")


async def test_fallback_sends_retryable_line_failures_to_a_synchronous_route(
    world: MakeWorld,
) -> None:
    rules = (FaultRule(match="#500#", kind=FaultKind.SERVER_ERROR, times=1),)
    w = world(SandboxConfig(batch_window=20.0, fault_rules=rules))
    batch = await w.submit([*prompts(2), {"id": "flaky", "prompt": "a flaky one #500#"}], ROUTE)

    await w.run(fallback="sandbox-openai")

    ledger = await w.rows(batch)
    assert ledger.states() == {JobState.SUCCEEDED.value: 3}
    first, second = ledger.attempts_of("flaky")
    assert (first["route"], first["outcome"]) == (ROUTE, "server_error")
    assert (second["route"], second["outcome"], second["remote_batch_id"]) == (
        "sandbox-openai",
        "ok",
        None,
    )
    (sync,) = [r for r in w.requests() if r.batch_id is None]
    assert sync.client_request_id == second["id"]
    assert math.isclose(second["expected_usd"], sync.charged_usd, abs_tol=2e-6)
    assert len(await checked(w, batch)) == 1, "no second remote batch"


async def test_jobs_are_split_by_bytes_and_a_line_too_large_fails_unsent(
    world: MakeWorld,
) -> None:
    w = world(config_text=route_config(**{ROUTE: {"batch_max_bytes": 700}}))
    huge = {"id": "huge", "prompt": "a very long prompt " * 60}
    batch = await w.submit([*prompts(6), huge], ROUTE)

    await w.run()

    ledger = await w.rows(batch)
    assert ledger.job("huge")["state"] == "failed"
    assert "batch_max_bytes" in ledger.job("huge")["last_error"]
    assert ledger.attempts_of("huge") == [], "nothing was sent for it"
    ours = await checked(w, batch)
    assert all(rb.bytes <= 700 for rb in ours)
    assert sum(rb.line_count for rb in ours) == 6
    assert len(ours) >= 2


async def test_a_run_budget_holds_back_the_lines_it_has_no_room_for(world: MakeWorld) -> None:
    w = world()
    batch = await w.submit(prompts(5), ROUTE)
    route = w.settings().catalog.get(ROUTE)
    worst = worst_case(w.settings().book, route, PricedJob(quality="low", prompt_chars=40))

    result = await w.run(budget_usd=2.5 * worst)

    assert result.report is not None
    assert result.report.stats.budget_stop is not None
    ledger = await w.rows(batch)
    assert ledger.states() == {JobState.SUCCEEDED.value: 2, JobState.QUEUED.value: 3}
    (rb,) = await checked(w, batch)
    assert rb.line_count == 2


async def test_jobs_are_split_by_lines(world: MakeWorld) -> None:
    w = world(config_text=route_config(**{ROUTE: {"batch_max_lines": 4, "batch_max_wait": 0.5}}))
    batch = await w.submit(prompts(10), ROUTE)

    await w.run()

    ours = await checked(w, batch)
    assert sorted(rb.line_count for rb in ours) == [2, 4, 4]
    assert (await w.rows(batch)).states() == {JobState.SUCCEEDED.value: 10}
    assert len(sandbox_batches(w.handle.sandbox)) == 3


async def test_an_expired_remote_batch_keeps_what_finished_and_requeues_the_rest(
    world: MakeWorld,
) -> None:
    """Lines the provider never ran cost nothing and run in a later remote batch."""
    from runner.sandbox import Latency

    w = world(SandboxConfig(batch_window=0.6, batch_concurrency=1, latency=Latency(mean=0.25)))
    batch = await w.submit(prompts(6), ROUTE)

    await w.run()

    ledger = await w.rows(batch)
    assert ledger.states() == {JobState.SUCCEEDED.value: 6}
    ours = await checked(w, batch)
    assert ours[0].status == "expired"
    assert len(ours) >= 2
    expired = [a for a in ledger.attempts if a["outcome"] == "interrupted"]
    assert expired
    assert all(a["charge_status"] == "not_charged" for a in expired)
    assert all(a["expected_usd"] == 0 for a in expired)


async def test_cancel_cancels_the_remote_batch_and_keeps_what_finished(world: MakeWorld) -> None:
    from runner.sandbox import Latency

    w = world(SandboxConfig(batch_window=60.0, batch_concurrency=1, latency=Latency(mean=0.3)))
    batch = await w.submit(prompts(8), ROUTE)

    async def cancel_when_running() -> None:
        with anyio.fail_after(30):
            while not any(b.completed for b in sandbox_batches(w.handle.sandbox)):
                await anyio.sleep(0.05)
        await app.cancel(w.settings(), batch.id)

    async with anyio.create_task_group() as group:
        group.start_soon(cancel_when_running)
        await w.run()

    ledger = await w.rows(batch)
    states = ledger.states()
    assert states[JobState.SUCCEEDED.value] >= 1
    assert states[JobState.CANCELLED.value] >= 1
    assert set(states) == {JobState.SUCCEEDED.value, JobState.CANCELLED.value}
    (rb,) = await checked(w, batch)
    assert rb.status == "cancelled"
    assert rb.cancel_requested


def rgba_png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (width, height), (0, 0, 0, 0)).save(out, "PNG")
    return out.getvalue()


def noise_png(width: int, height: int) -> bytes:
    """A PNG that does not compress (so its data URL is large)."""
    import os

    image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


async def test_remote_batches_on_postgresql(world: MakeWorld, pg_url: str) -> None:
    """The same lifecycle on PostgreSQL: split, retried error line, every line once."""
    rules = (FaultRule(match="#500#", kind=FaultKind.SERVER_ERROR, times=1),)
    w = world(
        SandboxConfig(batch_window=20.0, fault_rules=rules),
        db_url=pg_url,
        config_text=route_config(**{ROUTE: {"batch_max_lines": 3}}),
    )
    batch = await w.submit([*prompts(5), {"id": "flaky", "prompt": "again #500#"}], ROUTE)

    result = await w.run()

    assert result.report is not None
    assert result.report.clean
    ledger = await w.rows(batch)
    assert ledger.states() == {JobState.SUCCEEDED.value: 6}
    ours = await checked(w, batch)
    assert len(ours) == 3
    assert [a["outcome"] for a in ledger.attempts_of("flaky")] == ["server_error", "ok"]


async def test_streaming_fields_are_refused_at_submit(world: MakeWorld) -> None:
    w = world()
    line = {"id": "s", "prompt": "a kite", "stream": True}
    with pytest.raises(ValidationFailed) as caught:
        await w.submit([line], ROUTE)
    (problem,) = caught.value.problems
    assert (problem.line, problem.field) == (1, "stream")
    assert "remote batch line cannot stream" in problem.message


def test_probe_billing_refuses_a_remote_batch_route(world: MakeWorld) -> None:
    from runner.billing import ProbeOptions
    from runner.errors import UsageError

    with pytest.raises(UsageError, match="runs remote batches"):
        app.probe_plan(world().settings(), ROUTE, ProbeOptions())


async def test_a_cancel_before_the_remote_batch_exists_sends_nothing(world: MakeWorld) -> None:
    """Cancelled while its input was uploading: it is never created, its lines cost nothing."""
    w = world(SandboxConfig(batch_window=20.0, file_create_delay=1.0))
    batch = await w.submit(prompts(3), ROUTE)

    async def cancel_while_uploading() -> None:
        with anyio.fail_after(30):
            while not any(f.filename.startswith("imagerun-rb") for f in w.handle.sandbox.uploads):
                await anyio.sleep(0.02)
        await app.cancel(w.settings(), batch.id)

    async with anyio.create_task_group() as group:
        group.start_soon(cancel_while_uploading)
        await w.run()

    ledger = await w.rows(batch)
    assert ledger.states() == {JobState.CANCELLED.value: 3}
    assert sandbox_batches(w.handle.sandbox) == []
    assert {a["charge_status"] for a in ledger.attempts} == {"not_charged"}
    (rb,) = await remote_rows(w, batch)
    assert rb.step.value == "done"
    assert w.handle.sandbox.uploads.get(rb.input_file_id or "") is None
