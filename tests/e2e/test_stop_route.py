"""A bad key or an empty account stops the route at the first such answer; jobs stay queued."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner

from runner.cli import main
from runner.cli.demo import sandbox_environ
from runner.sandbox import FaultKind, FaultRule, SandboxConfig, SandboxHandle

from .conftest import MakeWorld
from .harness import RUN_DEADLINE, assert_log_matches_ledger, read_ledger, route_config

JOBS = 6


def lines(n: int = JOBS) -> list[dict[str, str]]:
    return [{"id": f"j{i}", "prompt": f"a paper boat, take {i}"} for i in range(n)]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("route", "key_var", "key"),
    [
        ("sandbox-openai", "SANDBOX_OPENAI_API_KEY", "sk-invalid"),
        ("sandbox-laozhang", "SANDBOX_LAOZHANG_API_KEY", "sk-default-invalid"),
    ],
)
async def test_bad_key_stops_the_route_after_the_first_401(
    world: MakeWorld, route: str, key_var: str, key: str
) -> None:
    """One 401 and the route stops: no job fails, every job is still queued for a good key."""
    w = world(SandboxConfig(tiny=True), env={key_var: key})
    batch = await w.submit(lines(), route)

    with anyio.fail_after(RUN_DEADLINE):
        result = await w.run([batch.id], concurrency=1)

    report = result.report
    assert report is not None
    assert not report.clean
    assert report.stopped_routes[route].startswith("auth:")
    ledger = await w.rows(batch)
    assert ledger.states() == {"queued": JOBS}
    [attempt] = ledger.attempts
    assert (attempt["outcome"], attempt["http_status"]) == ("auth", 401)
    seen = w.requests()
    assert [r.status for r in seen] == [401]
    assert_log_matches_ledger(ledger, seen)
    # The key never reaches the ledger, only the route and its variable's name do.
    assert key not in repr(ledger.attempts)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("route", "status", "quota_status"),
    [
        ("sandbox-laozhang", 403, 403),
        # laozhang documents that an empty balance may come back as a 429.
        ("sandbox-laozhang-vip", 429, 429),
    ],
)
async def test_quota_exhaustion_stops_the_route(
    world: MakeWorld, route: str, status: int, quota_status: int
) -> None:
    """Money for one call: one image, then `insufficient_user_quota`, then nothing more."""
    w = world(SandboxConfig(tiny=True, balance_usd=0.05, quota_status=quota_status))
    batch = await w.submit(lines(), route)

    with anyio.fail_after(RUN_DEADLINE):
        result = await w.run([batch.id], concurrency=1)

    assert result.report is not None
    assert result.report.stopped_routes[route].startswith("quota_exhausted:")
    ledger = await w.rows(batch)
    assert ledger.states() == {"succeeded": 1, "queued": JOBS - 1}
    outcomes = [(a["outcome"], a["http_status"]) for a in ledger.attempts]
    assert sorted(outcomes) == [("ok", 200), ("quota_exhausted", status)]
    seen = w.requests()
    assert len(seen) == 2
    assert_log_matches_ledger(ledger, seen)
    assert w.handle.sandbox.charged_usd() == pytest.approx(0.03)


def test_cli_run_with_a_bad_key_exits_1_and_says_why(
    server: SandboxHandle, tmp_path: Path, sqlite_url: str
) -> None:
    """`imagerun run` at full concurrency: the route stops, jobs stay queued, exit 1, a reason."""
    server.sandbox.reset(SandboxConfig(tiny=True))
    manifest = tmp_path / "boats.jsonl"
    manifest.write_text("".join(f'{{"prompt": "boat {i}"}}\n' for i in range(20)), "utf-8")
    env = sandbox_environ(server, {"SANDBOX_OPENAI_API_KEY": "sk-invalid"})
    env["IMAGERUN_CONFIG"] = str(tmp_path / "none.toml")
    (tmp_path / "none.toml").write_text("", "utf-8")
    args = ["--db", sqlite_url, "--data", str(tmp_path / "data")]
    runner = CliRunner()

    submitted = runner.invoke(
        main, [*args, "submit", str(manifest), "-r", "sandbox-openai"], env=env
    )
    assert submitted.exit_code == 0, submitted.output
    ran = runner.invoke(main, [*args, "run"], env=env)

    assert ran.exit_code == 1, ran.output
    assert "route sandbox-openai stopped: auth" in ran.output
    assert "stay queued" in ran.output
    assert "Traceback" not in ran.output

    async def check() -> None:
        from runner.store import Store

        store = await Store.open(sqlite_url)
        try:
            [batch] = await store.list_batches()
            ledger = await read_ledger(store, batch.id)
        finally:
            await store.close()
        assert ledger.states() == {"queued": 20}
        assert ledger.attempts, "no request was made"
        assert {a["outcome"] for a in ledger.attempts} == {"auth"}
        # Only requests that were already under way when the first 401 came back were sent.
        first_answer = min(a["finished_at"] for a in ledger.attempts)
        assert all(a["started_at"] <= first_answer for a in ledger.attempts)
        assert_log_matches_ledger(ledger, server.sandbox.requests())

    anyio.run(check)


@pytest.mark.anyio
async def test_a_route_model_its_key_cannot_use_stops_the_route(world: MakeWorld) -> None:
    """The gateway's 503 `model_not_found` for the route's own model: one request, then stop
    (every other job would get the same answer), and the jobs wait for a fixed route."""
    config = '[routes.sandbox-laozhang]\nmodel = "gpt-image-1"\n'  # not in the default group
    w = world(SandboxConfig(tiny=True), config_text=config)
    batch = await w.submit(lines(), "sandbox-laozhang")

    with anyio.fail_after(RUN_DEADLINE):
        result = await w.run([batch.id], concurrency=1)

    assert result.report is not None
    assert result.report.stopped_routes["sandbox-laozhang"].startswith(
        "model_not_found: No available channel for model gpt-image-1"
    )
    ledger = await w.rows(batch)
    assert ledger.states() == {"queued": JOBS}
    seen = w.requests()
    assert [r.status for r in seen] == [503]
    assert_log_matches_ledger(ledger, seen)


@pytest.mark.anyio
async def test_a_job_asking_for_a_model_out_of_reach_fails_alone(world: MakeWorld) -> None:
    """The same answer to one job's own `model` fails that job at once, unretried; the route
    and its other jobs go on."""
    w = world(SandboxConfig(tiny=True))
    jobs = [{"id": "other-model", "prompt": "a kite", "model": "gpt-image-1"}, *lines(3)]
    batch = await w.submit(jobs, "sandbox-laozhang")

    with anyio.fail_after(RUN_DEADLINE):
        result = await w.run([batch.id], concurrency=1)

    assert result.report is not None
    assert result.report.stopped_routes == {}
    ledger = await w.rows(batch)
    assert ledger.states() == {"failed": 1, "succeeded": 3}
    assert ledger.job("other-model")["state"] == "failed"
    assert [a["outcome"] for a in ledger.attempts_of("other-model")] == ["invalid_request"]
    assert_log_matches_ledger(ledger, w.requests())


@pytest.mark.anyio
async def test_a_retry_after_past_the_deadline_stops_the_route_saying_until_when(
    world: MakeWorld,
) -> None:
    """A 429 asking for a wait longer than the jobs may be retried: no pause, no re-send; the
    route stops for this run, the report names until when (UTC), every job stays queued."""
    rule = FaultRule(match="boat", kind=FaultKind.RATE_LIMIT)  # Retry-After: 1
    config = route_config(**{"sandbox-openai": {"deadline": 0.5}})
    w = world(SandboxConfig(tiny=True, fault_rules=(rule,)), config_text=config)
    batch = await w.submit(lines(), "sandbox-openai")

    with anyio.fail_after(RUN_DEADLINE):
        result = await w.run([batch.id], concurrency=1)

    report = result.report
    assert report is not None
    ledger = await w.rows(batch)
    [attempt] = ledger.attempts
    assert (attempt["outcome"], attempt["http_status"]) == ("rate_limited", 429)
    assert attempt["charge_status"] == "not_charged"
    reason = report.stopped_routes["sandbox-openai"]
    assert reason.startswith("rate_limited: the server asks to wait 1 s, until ")
    # Until when: a second after the answer, to the second (the clock may tick in between).
    until = {
        (attempt["finished_at"] + timedelta(seconds=s)).strftime("%Y-%m-%d %H:%M:%S UTC")
        for s in (0, 1, 2)
    }
    assert any(u in reason for u in until), reason
    assert ledger.states() == {"queued": JOBS}
    assert_log_matches_ledger(ledger, w.requests())
