"""The money commands as a user runs them: probe-billing asks first, reconcile reads an
exported call log, costs reports expected vs observed failure charges."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner, Result

from runner.cli import main
from runner.cli.demo import sandbox_environ
from runner.models import Outcome
from runner.sandbox import FaultKind, FaultRule, Latency, SandboxConfig

from .conftest import MakeWorld, World

ROUTE = "sandbox-laozhang"
KEY = "sk-default-sandbox"
CONFIG = SandboxConfig(
    latency=Latency(mean=0.3),
    fault_rules=(
        FaultRule(match="#P500#", kind=FaultKind.SERVER_ERROR),
        FaultRule(match="#B500#", kind=FaultKind.SERVER_ERROR, times=1),
    ),
    charged_failures=frozenset({Outcome.SERVER_ERROR}),
)


def invoke(w: World, *args: str, stdin: str | None = None) -> Result:
    env = {
        **sandbox_environ(w.handle, {}),
        "IMAGERUN_DB": w.db_url,
        "IMAGERUN_DATA": str(w.root / "data"),
        "IMAGERUN_CONFIG": str(w.root / "imagerun.toml"),
    }
    (w.root / "imagerun.toml").write_text(w.config_text, "utf-8")
    return CliRunner().invoke(main, list(args), env=env, input=stdin, catch_exceptions=False)


def export_csv(w: World, path: Path) -> None:
    """The sandbox's call log as a user would export it from a console."""
    response = httpx.get(
        f"{w.handle.url}/laozhang/api/log/token", headers={"Authorization": f"Bearer {KEY}"}
    )
    rows: list[dict[str, Any]] = response.json()["data"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["created_at", "type", "request_id", "quota", "model_name", "other"])
        for row in rows:
            when = datetime.fromtimestamp(row["created_at"], UTC).isoformat()
            writer.writerow(
                [
                    when,
                    row["type"],
                    row["request_id"],
                    row["quota"],
                    row["model_name"],
                    row["other"],
                ]
            )


def test_probe_billing_refuses_to_spend_without_a_terminal_or_yes(world: MakeWorld) -> None:
    w = world(CONFIG)
    result = invoke(w, "probe-billing", "--route", ROUTE, stdin="y\n")
    assert result.exit_code == 2
    assert "--yes" in result.output
    assert "at most $0.1200" in result.output  # the plan and its worst case came first
    assert w.requests() == []


def test_probe_then_batch_then_reconcile_from_an_exported_log(world: MakeWorld) -> None:
    w = world(CONFIG)
    probe = invoke(
        w,
        "probe-billing",
        "--route",
        ROUTE,
        "--yes",
        "--no-moderation",
        "--provoke",
        "server_error=#P500#",
        "--timeout-after",
        "0.1",
        "--settle",
        "0.3",
        "--timeout-settle",
        "0.3",
        "--poll",
        "0.05",
        "--json",
    )
    assert probe.exit_code == 0, probe.output
    results = {r["outcome"]: r for r in json.loads(probe.stdout)["results"]}
    assert set(results) == {"ok", "invalid_request", "timeout", "server_error"}
    assert results["server_error"]["observed"] == "charged"
    assert results["server_error"]["expected"] == "not_charged"
    assert results["timeout"]["observed"] == "not_charged"

    manifest = w.root / "jobs.jsonl"
    lines = [{"id": f"j{i}", "prompt": f"a paper boat {i}"} for i in range(5)]
    lines[1]["prompt"] += " #B500#"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines), "utf-8")
    assert invoke(w, "submit", str(manifest), "--route", ROUTE, "--name", "boats").exit_code == 0
    assert invoke(w, "run", "boats", "-c", "1").exit_code == 0

    exported = w.root / "call-log.csv"
    export_csv(w, exported)
    reconciled = invoke(
        w, "reconcile", "--route", ROUTE, "--batch", "boats", "--log", str(exported), "--json"
    )
    assert reconciled.exit_code == 0, reconciled.output
    report = json.loads(reconciled.stdout)
    assert report["attempts"] == 6  # five jobs, one retried after its server error
    assert report["unknown"]["attempts"] == 0
    assert report["charged"] == {"attempts": 6, "usd": 0.18}

    costs = invoke(w, "costs", "--json")
    assert costs.exit_code == 0, costs.output
    summary = json.loads(costs.stdout)
    sandbox_total = round(sum(r.charged_usd for r in w.requests()), 6)
    assert summary["charged_usd"] == sandbox_total
    assert summary["unknown"]["attempts"] == 0
    [server] = [
        f
        for f in summary["failure_charges"]
        if (f["route"], f["outcome"]) == (ROUTE, "server_error")
    ]
    assert server["expected"] == "not_charged"
    assert server["observed"]["charge_status"] == "charged"
    assert server["agrees"] is False
    assert server["attempts"] == {"charged": 2}

    human = invoke(w, "costs", "boats", "--reprice")
    assert human.exit_code == 0, human.output
    assert "Repriced 6 attempt(s)" in human.output
    assert "$0.1800 → $0.1800" in human.output


def test_probe_billing_sends_nothing_when_charges_cannot_be_observed(world: MakeWorld) -> None:
    w = world(CONFIG)
    result = invoke(
        w, "probe-billing", "--route", ROUTE, "--yes", "--balance-url", f"{w.handle.url}/nowhere"
    )
    assert result.exit_code == 2
    assert "cannot read the balance" in result.output
    assert w.requests() == []


def test_provoke_wants_a_class_a_server_can_answer_with(world: MakeWorld) -> None:
    w = world(CONFIG)
    result = invoke(w, "probe-billing", "--route", ROUTE, "--yes", "--provoke", "auth=#X#")
    assert result.exit_code == 2
    assert "--provoke wants CLASS=MARKER" in result.output
